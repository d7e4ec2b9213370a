"""PSPNet export report: export time, graph size and parity at several input sizes (static exports
and one dynamic-shape model), what the fixed-kernel avg_pool workaround would cost in accuracy, and ONNX
Runtime CPU vs PyTorch eager CPU latency. Run: `python -m experiments.export_report [--json report.json]`."""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import torch
from torch import nn

from benchmarks.report import write_text
from export.onnx.exporter import export_onnx, feature_size, verify_onnx
from export.parity import ParityReport, compare_outputs
from export.scenes import sample_batch
from pspcore.cli import SIZE, Command
from pspcore.model_info import INPUT_NAME
from pspnet import create_model
from pspnet.checkpoint import info_for_config


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running statistics and affine terms, so an untrained network's logits are not flat and
    parity figures mean something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                m.weight.copy_(torch.rand(n, generator=generator) * 0.5 + 0.75)
                m.bias.copy_(torch.rand(n, generator=generator) * 0.2 - 0.1)
    return model


@dataclass
class SizeRow:
    size: str
    feature: str
    export_s: float | None
    nodes: int | None
    file_mb: float | None
    max_abs: float
    max_rel_to_range: float
    argmax_agreement: float
    fixed_kernel_rel: float | None  # the avg_pool(floor(F/b)) workaround vs the true network: max error /
    fixed_kernel_agreement: float | None  # range and argmax agreement (None: exact at this size)


def fixed_kernel_parity(model: nn.Module, inputs: torch.Tensor) -> ParityReport | None:
    """How far from the true network it gets when every AdaptiveAvgPool2d(b) is replaced by
    avg_pool(kernel=stride=floor(F/b)), the usual static-export workaround; None where that is exact."""
    fh, fw = feature_size(tuple(inputs.shape[-2:]))
    bins = [m.output_size for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if all(fh % b == 0 and fw % b == 0 for b in bins):
        return None
    with torch.no_grad():
        reference = model(inputs).numpy()
    originals = {}
    for name, m in model.named_modules():
        for child_name, child in m.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d):
                b = child.output_size
                originals[(m, child_name)] = child
                setattr(m, child_name, nn.AvgPool2d((fh // b, fw // b), (fh // b, fw // b)))
    try:
        with torch.no_grad():
            approx = model(inputs).numpy()
    finally:
        for (parent, child_name), child in originals.items():
            setattr(parent, child_name, child)
    return compare_outputs(reference, approx)


def latency(model: nn.Module, path: Path, size: tuple[int, int], iterations: int, threads: int) -> dict:
    """Interleaved PyTorch eager and ONNX Runtime runs on one image, after one warm-up each."""
    import onnxruntime as ort

    torch.set_num_threads(threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    image = sample_batch(info_for_config(model.config), size, 1)
    times = {"pytorch": [], "onnxruntime": []}
    for i in range(iterations + 1):
        for name in times:
            start = time.perf_counter()
            if name == "pytorch":
                with torch.no_grad():
                    model(torch.from_numpy(image))
            else:
                session.run(None, {INPUT_NAME: image})
            if i:  # the first round is the warm-up
                times[name].append(1000 * (time.perf_counter() - start))
    return {name: {"mean_ms": statistics.mean(t), "median_ms": statistics.median(t), "min_ms": min(t),
                   "max_ms": max(t), "iterations": len(t)} for name, t in times.items()}


def static_rows(model, info, sizes, workdir: Path) -> list[SizeRow]:
    rows = []
    for size in sizes:
        result = export_onnx(model, info, workdir / f"static_{size[0]}x{size[1]}.onnx", size=size, batch=1)
        p = result.parity
        fixed = fixed_kernel_parity(model, torch.from_numpy(sample_batch(info, size, 1)))
        rows.append(SizeRow(f"{size[0]}x{size[1]}", "x".join(map(str, feature_size(size))), result.seconds,
                            result.node_count, result.file_size / 1e6, p.max_abs, p.max_rel_to_range,
                            p.argmax_agreement, fixed and fixed.max_rel_to_range,
                            fixed and fixed.argmax_agreement))
        click.echo(f"  static {rows[-1].size}: {result.seconds:.1f} s, {p.describe()}", err=True)
    return rows


def dynamic_rows(model, info, sizes, workdir: Path) -> tuple[dict, list[SizeRow]]:
    path = workdir / "dynamic.onnx"
    result = export_onnx(model, info, path, size=sizes[0], dynamic_shape=True, verify=False)
    checks = verify_onnx(path, model, result.info, sizes, batch=None)
    rows = [SizeRow(f"{s[0]}x{s[1]}", "x".join(map(str, feature_size(s))), None, None, None, r.max_abs,
                    r.max_rel_to_range, r.argmax_agreement, None, None) for s, (_, r) in zip(sizes, checks)]
    summary = {"export_s": result.seconds, "nodes": result.node_count, "file_mb": result.file_size / 1e6}
    click.echo(f"  dynamic: {result.seconds:.1f} s export, {result.node_count} nodes", err=True)
    return summary, rows


def markdown(report: dict) -> str:
    lines = [f"{report['arch']}, {report['classes']} classes, random weights (randomised BN); "
             f"{report['layers']} layers; torch {report['torch']}, onnxruntime {report['onnxruntime']}",
             "", "| export | size | feature | export s | nodes | MB | max abs | max err/range | argmax agree "
             "| fixed-kernel err/range, agree |", "|---|---|---|---|---|---|---|---|---|---|"]
    for kind, rows in (("static", report["static"]), ("dynamic", report["dynamic"]["rows"])):
        for r in rows:
            fixed = r["fixed_kernel_agreement"]
            fixed_cell = "exact here" if fixed is None else f"{r['fixed_kernel_rel']:.2e}, {100 * fixed:.2f}%"
            cells = [kind, r["size"], r["feature"], "-" if r["export_s"] is None else f"{r['export_s']:.1f}",
                     str(r["nodes"] or "-"), "-" if r["file_mb"] is None else f"{r['file_mb']:.1f}",
                     f"{r['max_abs']:.2e}", f"{r['max_rel_to_range']:.2e}", f"{100 * r['argmax_agreement']:.4f}%",
                     "-" if kind == "dynamic" else fixed_cell]
            lines.append("| " + " | ".join(cells) + " |")
    d = report["dynamic"]
    lines += ["", f"dynamic-shape model: {d['export_s']:.1f} s export, {d['nodes']} nodes, {d['file_mb']:.1f} MB",
              "", f"latency at {report['latency_size']}, 1 image, {report['threads']} threads (mean / median / min):"]
    for name, t in report["latency"].items():
        lines.append(f"- {name}: {t['mean_ms']:.0f} / {t['median_ms']:.0f} / {t['min_ms']:.0f} ms "
                     f"({t['iterations']} iterations)")
    return "\n".join(lines)


@click.command(cls=Command)
@click.option("--arch", default="pspnet50", show_default=True)
@click.option("--classes", default=150, show_default=True)
@click.option("--size", "sizes", type=SIZE, multiple=True, help="Sizes to export at [default: 473, 512x1024, "
              "375x500]; the first is also the dynamic model's trace size and the latency size.")
@click.option("--iterations", default=5, show_default=True, help="Timed latency runs per backend.")
@click.option("--threads", default=2, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the report as JSON.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Also write the Markdown table.")
def main(arch, classes, sizes, iterations, threads, json_path, markdown_path):
    """PSPNet export report: time, graph size, parity, fixed-kernel avg_pool error (several minutes on 2 CPU
    cores for PSPNet-50)."""
    import onnxruntime

    sizes = list(sizes) or [(473, 473), (512, 1024), (375, 500)]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = randomize_batchnorm(create_model(arch, num_classes=classes, aux=False)).eval()
    info = info_for_config(model.config)
    with tempfile.TemporaryDirectory(prefix="export_report_") as tmp:
        workdir = Path(tmp)
        static = static_rows(model, info, sizes, workdir)
        dynamic_summary, dynamic = dynamic_rows(model, info, sizes, workdir)
        timing = latency(model, workdir / f"static_{sizes[0][0]}x{sizes[0][1]}.onnx", sizes[0], iterations, threads)
    report = {"arch": arch, "classes": classes, "torch": torch.__version__,
              "onnxruntime": onnxruntime.__version__, "threads": threads,
              "layers": sum(1 for m in model.modules() if not list(m.children()) and not isinstance(m, nn.Dropout2d)),
              "static": [asdict(r) for r in static],
              "dynamic": {**dynamic_summary, "rows": [asdict(r) for r in dynamic]},
              "latency_size": f"{sizes[0][0]}x{sizes[0][1]}", "latency": timing}
    click.echo(markdown(report))
    if json_path:
        write_text(json.dumps(report, indent=2) + "\n", json_path)
    if markdown_path:
        write_text(markdown(report) + "\n", markdown_path)


if __name__ == "__main__":
    main()
