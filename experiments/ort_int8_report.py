"""The Markdown of experiments.ort_int8_analysis: its measurements (an Analysis) turned into the variant,
per-layer, per-op and labels tables, and the measured reasons written out in words. The command runs both:

    python -m experiments.ort_int8_report runs/ort-int8 --markdown runs/ort-int8/ort-int8.md   # ~20 min, 2 cores
"""
from __future__ import annotations

import math
import pickle
import statistics
from collections import defaultdict
from pathlib import Path

import click

from benchmarks.report import markdown_table, write_text
from experiments.ort_int8_analysis import (
    ABOUT,
    CALIBRATION_IMAGES,
    Analysis,
    Kernel,
    Measured,
    conv_class,
    conv_gemm_shape,
    run_analysis,
)
from pspcore.cli import Command


def _default(analysis: Analysis) -> Measured:
    return next(m for m in analysis.measured if m.variant.name == "default")


def _conv_ms(m: Measured) -> float:
    return sum(k.ms for k in m.kernels.values() if k.op in ("QLinearConv", "Conv", "FusedConv"))


def variant_table(analysis: Analysis) -> tuple[list[str], list[list[str]]]:
    base = _default(analysis)
    gop = sum(2 * math.prod(s) for s in (conv_gemm_shape(k, base.attributes) for k in base.kernels.values()) if s) / 1e9
    headers = ["session", "what", "threads", "median ms", "best ms", "vs default (best)", "conv ms", "conv TOP/s",
               "Resize ms", "ArgMax ms", "DequantizeLinear ms", "other ms", "logit error vs FP32",
               "vs default"]
    rows = []
    for m in analysis.measured:
        ops = m.by_op()
        conv = _conv_ms(m)
        known = conv + ops.get("Resize", 0) + ops.get("ArgMax", 0) + ops.get("DequantizeLinear", 0)
        rows.append([m.variant.name, ABOUT.get(m.variant.name, m.variant.about), str(m.threads),
                     f"{m.median_ms:.0f}", f"{m.best_ms:.0f}",
                     f"{base.best_ms / m.best_ms:.2f}x", f"{conv:.0f}", f"{gop / conv:.3f}" if conv else "-",
                     f"{ops.get('Resize', 0):.1f}", f"{ops.get('ArgMax', 0):.1f}",
                     f"{ops.get('DequantizeLinear', 0):.1f}", f"{sum(ops.values()) - known:.0f}",
                     m.error_vs_fp32, m.error_vs_default])
    return headers, rows


def layer_rows(analysis: Analysis) -> tuple[list[str], list[list[str]], dict]:
    """Per conv class of the default session: time, GOP, rate, and the MatMulInteger of the same shapes."""
    base = _default(analysis)
    groups: dict[str, dict] = defaultdict(lambda: {"n": 0, "ms": 0.0, "gop": 0.0, "gemm": 0.0, "gemm_u8": 0.0})
    for k in base.kernels.values():
        shape = conv_gemm_shape(k, base.attributes)
        if shape is None:
            continue
        g = groups[conv_class(k, base.attributes.get(k.name, {}))]
        g["n"] += 1
        g["ms"] += k.ms
        g["gop"] += 2 * math.prod(shape) / 1e9
        g["gemm"] += analysis.gemm[shape]
        g["gemm_u8"] += analysis.gemm_u8.get(shape, float("nan"))
    headers = ["conv kind", "nodes", "GOP", "QLinearConv ms", "% of conv time", "TOP/s",
               "MatMulInteger u8s8, same M x K x N: ms", "its TOP/s", "MatMulInteger u8u8 ms", "conv / GEMM time"]
    total = sum(g["ms"] for g in groups.values())
    rows = []
    for kind, g in sorted(groups.items(), key=lambda kv: -kv[1]["ms"]):
        rows.append([kind, str(g["n"]), f"{g['gop']:.1f}", f"{g['ms']:.1f}", f"{100 * g['ms'] / total:.1f}",
                     f"{g['gop'] / g['ms']:.3f}", f"{g['gemm']:.1f}", f"{g['gop'] / g['gemm']:.3f}",
                     f"{g['gemm_u8']:.1f}", f"{g['ms'] / g['gemm']:.2f}"])
    all_gop = sum(g["gop"] for g in groups.values())
    all_gemm = sum(g["gemm"] for g in groups.values())
    all_u8 = sum(g["gemm_u8"] for g in groups.values())
    rows.append(["all", str(sum(g["n"] for g in groups.values())), f"{all_gop:.1f}", f"{total:.0f}", "100.0",
                 f"{all_gop / total:.3f}", f"{all_gemm:.0f}", f"{all_gop / all_gemm:.3f}", f"{all_u8:.0f}",
                 f"{total / all_gemm:.2f}"])
    return headers, rows, {"conv_ms": total, "gemm_ms": all_gemm, "gop": all_gop, "gemm_u8_ms": all_u8}


def slowest_rows(analysis: Analysis, top: int = 8) -> tuple[list[str], list[list[str]]]:
    base = _default(analysis)
    convs = [k for k in base.kernels.values() if conv_gemm_shape(k, base.attributes)]
    convs.sort(key=lambda k: -k.ms)
    headers = ["QLinearConv node", "kind", "M x K x N", "ms", "TOP/s", "same-shape GEMM TOP/s"]
    rows = []
    for k in convs[:top]:
        m, kk, n = conv_gemm_shape(k, base.attributes)
        gop = 2 * m * kk * n / 1e9
        rows.append([k.name, conv_class(k, base.attributes.get(k.name, {})), f"{m} x {kk} x {n}", f"{k.ms:.1f}",
                     f"{gop / k.ms:.3f}", f"{gop / analysis.gemm[(m, kk, n)]:.3f}"])
    return headers, rows


def op_rows(analysis: Analysis) -> tuple[list[str], list[list[str]]]:
    base = _default(analysis)
    ops = base.by_op()
    total = sum(ops.values())
    counts: dict[str, int] = defaultdict(int)
    for k in base.kernels.values():
        counts[k.op] += 1
    return (["op (default session)", "nodes", "ms", "%"],
            [[op, str(counts[op]), f"{ms:.1f}", f"{100 * ms / total:.1f}"] for op, ms in ops.items() if ms >= 0.05]
            + [["all kernels", str(len(base.kernels)), f"{total:.0f}", "100.0"]])


def dq_rows(analysis: Analysis) -> tuple[list[str], list[list[str]]]:
    """The DequantizeLinear nodes left unfused in the default session: what they feed decides if they go."""
    base = _default(analysis)
    dqs = sorted((k for k in base.kernels.values() if k.op == "DequantizeLinear"), key=lambda k: -k.ms)
    return (["unfused DequantizeLinear", "input shape", "ms"],
            [[k.name, "x".join(map(str, k.inputs[0])) if k.inputs else "?", f"{k.ms:.2f}"] for k in dqs[:8]])


def labels_rows(labels: dict) -> tuple[list[str], list[list[str]]]:
    results = labels["bench"].get("results", [])
    headers = ["model (ONNX Runtime)", "output", "psp-bench median ms",
               f"psp-infer, {labels['images']} images: median s (best)", "psp-infer s / image (median)"]
    rows = []
    for precision, pair in labels["pairs"].items():
        for path, output in zip(pair, ("logits", "labels")):
            r = next((v for v in results if v["model"] == path), None)
            median_ms = r["latency"]["median"] if r else float("nan")
            runs = labels["infer"][path]
            seconds = statistics.median(runs)
            rows.append([f"{precision} ({Path(path).name})", output, f"{median_ms:.0f}",
                         f"{seconds:.1f} ({min(runs):.1f})", f"{seconds / labels['images']:.2f}"])
    return headers, rows


def openvino_label_rows(labels: dict) -> tuple[list[str], list[list[str]]]:
    ov = labels.get("openvino") or {}
    return (["OpenVINO runner on the logits file", "output", "best ms", "median ms"],
            [[name.split()[0], name.split()[1], f"{t['best']:.0f}", f"{t['median']:.0f}"] for name, t in ov.items()])


def labels_reasons(labels: dict) -> list[str]:
    """The labels output against logits, per precision: psp-bench's median, psp-infer's median, OpenVINO's best."""
    results = {r["model"]: r["latency"]["median"] for r in labels["bench"].get("results", [])}
    lines = []
    for precision, (logits, label) in labels["pairs"].items():
        bench = results.get(logits, float("nan")) / results.get(label, float("nan"))
        infer = statistics.median(labels["infer"][logits]) / statistics.median(labels["infer"][label])
        ov = labels.get("openvino") or {}
        ov_text = ""
        if f"{precision} logits" in ov:
            ov_text = (f"; OpenVINO with its appended ArgMax "
                       f"{ov[f'{precision} logits']['best'] / ov[f'{precision} labels']['best']:.2f}x (best run)")
        lines.append(f"- **The labels output, {precision}**: psp-bench {bench:.2f}x the logits model's speed "
                     f"(median), psp-infer end to end {infer:.2f}x{ov_text}. (Above 1: labels faster.)")
    return lines


def _duplicated_dq(base: Measured) -> tuple[int, str, float]:
    """(copies, shape, ms) of the most-duplicated unfused DequantizeLinear input: ORT gives every consumer
    of a DQ its own copy, so one activation feeding several FP32 nodes is dequantized once for each."""
    groups: dict[str, list[Kernel]] = defaultdict(list)
    for k in base.kernels.values():
        if k.op == "DequantizeLinear" and k.inputs:
            groups[k.name.split("/duplicated")[0]].append(k)
    if not groups:
        return 0, "", 0.0
    name, copies = max(groups.items(), key=lambda kv: sum(k.ms for k in kv[1]))
    return len(copies), "x".join(map(str, copies[0].inputs[0])), sum(k.ms for k in copies)


def reasons(analysis: Analysis, layer_rows_: list[list[str]], layer_totals: dict) -> list[str]:
    """The measured reasons, each a sentence built from the numbers above."""
    by_name = {m.variant.name: m for m in analysis.measured}
    base = by_name["default"]
    ops = base.by_op()
    total = sum(ops.values())
    conv = _conv_ms(base)
    best_int8 = max((r for r in analysis.limits if r.kind == "int8" and r.runtime == "onnxruntime"),
                    key=lambda r: r.tops, default=None)
    gop = layer_totals["gop"]
    lines = []
    shapes = [shape for shape in (conv_gemm_shape(k, base.attributes) for k in base.kernels.values()) if shape]
    ratio = conv / layer_totals["gemm_ms"]
    verdict = ("is about as fast as the GEMM of its shapes" if ratio <= 1.2 else
               f"takes {ratio:.1f}x the time of the GEMM of its shapes")
    if best_int8 is not None:
        lines.append(f"- **QLinearConv {verdict}.** It runs the model's {gop:.0f} GOP of convolutions in {conv:.0f} ms "
                     f"({gop / conv:.3f} TOP/s, {100 * gop / conv / best_int8.tops:.0f}% of the 2048^3 "
                     f"{best_int8.op} rate, {best_int8.tops:.3f} TOP/s); MatMulInteger on the same M x K x N shapes "
                     f"(N = {min(s[2] for s in shapes)}..{max(s[2] for s in shapes)} output channels, K = "
                     f"{min(s[1] for s in shapes)}..{max(s[1] for s in shapes)}) takes {layer_totals['gemm_ms']:.0f} "
                     f"ms ({gop / layer_totals['gemm_ms']:.3f} TOP/s). QLinearConv is {100 * conv / total:.0f}% of "
                     "the kernel time.")
    slow = [r for r in layer_rows_[:-1] if float(r[-1]) >= 2.0]
    for r in slow:
        lines.append(f"- {r[0]} convolutions ({r[1]} node(s)) take {r[-1]}x the time of their GEMM "
                     f"({r[3]} ms vs {r[6]} ms, {r[4]}% of the conv time).")
    lines.append(f"- The same shapes as a U8U8 GEMM (U8 weights, or ORT's exact mode) take "
                 f"{layer_totals['gemm_u8_ms']:.0f} ms instead of {layer_totals['gemm_ms']:.0f} ms "
                 f"({layer_totals['gemm_u8_ms'] / layer_totals['gemm_ms']:.2f}x): AVX2 has no 8-bit x 8-bit "
                 "multiply for unsigned pairs, so MLAS widens to 16 bits (vpmaddwd) where U8S8 uses vpmaddubsw.")
    resize = ops.get("Resize", 0)
    lines.append(f"- **Outside the convolutions**: the FP32 Resize of the {analysis.machine['classes']}-channel "
                 f"logits to {analysis.size}x{analysis.size} {resize:.0f} ms ({100 * resize / total:.1f}% of the "
                 f"kernel time), DequantizeLinear {ops.get('DequantizeLinear', 0):.0f} ms.")
    copies, shape, ms = _duplicated_dq(base)
    if copies > 1:
        lines.append(f"- ORT dequantizes the {shape} activation that feeds the exact (FP32) pyramid pooling {copies} "
                     f"times, once per pooling branch ({ms:.0f} ms in all).")
    again = by_name.get("default again")
    if again is not None:
        lines.append(f"- Spread: two identical default sessions differ by "
                     f"{100 * abs(again.best_ms - base.best_ms) / base.best_ms:.0f}% (best run) and "
                     f"{100 * abs(again.median_ms - base.median_ms) / base.median_ms:.0f}% (median) in this run; "
                     "differences below that are noise.")
    for name, what in (("default, x64quantprecision", "ORT's exact mode (S8 weights made U8, a U8U8 GEMM)"),
                       ("u8 weights", "U8 weights"), ("per-tensor", "per-tensor weights"),
                       ("qoperator", "the QOperator format"), ("reduce-range", "7-bit weights"),
                       ("default, EXTENDED", "no layout transformer"), ("default, BASIC", "no QDQ fusion"),
                       ("resize uint8", "the logit Resize on uint8"), ("labels", "the labels output"),
                       ("default, no spinning", "no spinning"), ("default, dynamic blocks", "dynamic blocks"),
                       ("default, 1 thread", "half the threads")):
        m = by_name.get(name)
        if m is not None:
            lines.append(f"- {what}: best {m.best_ms:.0f} ms vs {base.best_ms:.0f} ms "
                         f"({base.best_ms / m.best_ms:.2f}x), conv {_conv_ms(m):.0f} ms vs {conv:.0f} ms; "
                         f"logit error vs the default session {m.error_vs_default}.")
    if analysis.saturation:
        rows = {r["session"].split(",")[0] + ("exact" if "exact" in r["session"] else ""): r
                for r in analysis.saturation["rows"]}
        eight, exact = rows["S8 weights"], rows["S8 weightsexact"]
        seven = rows["7-bit weights (reduce_range)"]
        lines.append(f"- **U8S8 saturation on this CPU costs accuracy, 7-bit weights remove it for free.** On the "
                     f"demo's trained model, 8-bit weights keep {100 * eight['agreement']:.2f}% of the FP32 labels "
                     f"(logit error {eight['error']}), ORT's exact mode {100 * exact['agreement']:.2f}% "
                     f"({exact['error']}), 7-bit weights {100 * seven['agreement']:.2f}% ({seven['error']}); 7-bit "
                     "weights run the same kernels (the reduce-range row above), the exact mode does not. The "
                     "onnxruntime target now writes 7-bit weights.")
    if analysis.labels:
        lines += labels_reasons(analysis.labels)
    lines.append("- **From ONNX Runtime's source** (not measurable on this CPU): QLinearConv with symmetric S8 "
                 "weights (zero point 0, what the onnxruntime target writes) takes MLAS's ConvSym kernels "
                 "(`qlinearconv.cc`, `TryConvSymPrepack`), which exist for AVX2, AVX512-core and AVX512-VNNI but not "
                 "for AMX, while MatMulInteger's U8S8 GEMM switches to AMX tiles (`mlas/lib/platform.cpp`). That fits "
                 "the AMX Xeon's figure in the issue (QLinearConv at about a quarter of MatMulInteger's AMX rate). "
                 "Weights with a non-zero zero point would send QLinearConv through im2col to the U8S8 GEMM (AMX "
                 "there); U8 weights or `session.x64quantprecision` go to the U8U8 GEMM, which has no AMX kernel. "
                 "Confirming it needs an AMX machine.")
    return lines


def render(analysis: Analysis) -> str:
    m = analysis.machine
    lines = ["### QLinearConv against ONNX Runtime's own GEMM rate, variant by variant", "",
             f"Measured on {m['cpu']} ({m['cores']} cores; instruction sets: {m['isa']}), onnxruntime "
             f"{m['onnxruntime']}, {m['arch']} ({m['classes']} classes, random weights) at "
             f"{analysis.size}x{analysis.size}, batch 1, {m['threads']} threads, {analysis.runs} profiled runs per "
             "session after a warm-up (kernel times: the best run of each node; a shared machine only adds time), "
             f"sessions interleaved; load average {m['load_start']} at the start, {m['load_end']} at the end; "
             f"{m['date']}. Calibration: MinMax on {CALIBRATION_IMAGES} drawn scenes, shared by every variant "
             "(scales do not change which kernel runs).", "",
             "The machine's GEMM rates (2048^3, best of several runs):", ""]
    rates = [[r.runtime, r.kind, r.op, f"{r.tops:.3f}"] for r in analysis.limits] + \
        [["onnxruntime", "int8", op, f"{tops:.3f}"] for op, tops in analysis.extra_limits.items()]
    lines += markdown_table(["runtime", "kind", "op", "TOP/s"], rates) + [""]
    lines += ["Sessions (wall time of the profiled runs; conv = QLinearConv, or Conv where nothing fused; logit "
              "error = mean |difference| / the reference's standard deviation, on one drawn scene):", ""]
    lines += markdown_table(*variant_table(analysis)) + [""]
    headers, rows, totals = layer_rows(analysis)
    lines += ["Where QLinearConv is slow (default session), set against MatMulInteger on the same shapes (the "
              "GEMM the convolution amounts to, without im2col, requantization or layout work):", ""]
    lines += markdown_table(headers, rows) + [""]
    lines += markdown_table(*slowest_rows(analysis)) + [""]
    lines += markdown_table(*op_rows(analysis)) + [""]
    dq = dq_rows(analysis)
    if dq[1]:
        lines += markdown_table(*dq) + [""]
    if analysis.labels:
        bench_machine = analysis.labels["bench"].get("machine", {})
        lines += ["The labels output (ArgMax -> uint8 in the graph) against logits, same network, psp-bench "
                  "(interleaved) and psp-infer on drawn 640x480 images (end to end, process start included); "
                  f"measured {bench_machine.get('date', '?')}, load average {bench_machine.get('load_average', '?')}:",
                  ""]
        lines += markdown_table(*labels_rows(analysis.labels)) + [""]
        if analysis.labels.get("openvino"):
            lines += ["OpenVINO, the same logits files run as they are and with the runner's appended ArgMax "
                      "(`output=\"labels\"`, what psp-infer asks of it), interleaved:", ""]
            lines += markdown_table(*openvino_label_rows(analysis.labels)) + [""]
    if analysis.saturation:
        sat = analysis.saturation
        lines += [f"U8S8 saturation on this CPU, on a trained model ({Path(sat['model']).name}, the demo's; "
                  f"INT8 calibrated with entropy on {sat['calibration']} train images; {sat['images']} val images):",
                  ""]
        lines += markdown_table(["INT8 session", "labels = FP32", "logit error vs FP32"],
                                [[r["session"], f"{100 * r['agreement']:.2f}%", r["error"]] for r in sat["rows"]])
        lines += [""]
    lines += ["Measured reasons:", ""] + reasons(analysis, rows, totals)
    return "\n".join(lines) + "\n"


def _show_variants(analysis: Analysis) -> None:
    click.echo("\n".join(markdown_table(*variant_table(analysis))), err=True)


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("work", type=click.Path(file_okay=False, path_type=Path), default="runs/ort-int8")
@click.option("--arch", default="pspnet50", show_default=True)
@click.option("--classes", default=150, show_default=True)
@click.option("--size", type=click.IntRange(min=65), default=473, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=6, show_default=True, help="Profiled runs per session.")
@click.option("--labels", type=click.Choice(["measure", "reuse", "skip"]), default="measure", show_default=True,
              help="Logits vs labels output with psp-bench and psp-infer: measure, take from WORK/analysis.pkl "
                   "of an earlier run, or skip.")
@click.option("--infer-images", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--trained", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A demo output folder (models/<arch>-fp32.onnx, data/): measure U8S8 saturation on its "
                   "trained model.")
@click.option("--from-saved", is_flag=True, help="Write the fragment from WORK/analysis.pkl of an earlier run.")
def main(work, arch, classes, size, threads, runs, labels, infer_images, markdown_path, from_saved, trained):
    """Measure why ONNX Runtime's INT8 PSPNet runs below the machine's integer GEMM rate; write the fragment."""
    saved = work / "analysis.pkl"
    if from_saved:
        analysis = pickle.loads(saved.read_bytes())
    else:
        analysis = run_analysis(work, arch, classes, size, threads, runs,
                                {"measure": True, "reuse": "reuse", "skip": False}[labels], infer_images, trained,
                                show=_show_variants)
        saved.write_bytes(pickle.dumps(analysis))  # the numbers, to write the page again without measuring
    write_text(render(analysis), markdown_path)
    click.echo(f"wrote {markdown_path}", err=True)


if __name__ == "__main__":
    main()
