"""NNCF's quantize_with_accuracy_control against our verified INT8 conversion with repair, on the outlier network
(experiments/outliers.py, the network of tests/export/test_verified.py) for the openvino INT8 target: the same
calibration and held-out images, the same metric (argmax agreement with FP32, measured on OpenVINO) and the same
bar (our gate 98%, NNCF's max_drop 0.02 absolute from FP32's 100%).

    python -m experiments.ov_accuracy_control WORK_DIR --markdown ov_accuracy_control.md

Every result is written as IR and measured the same way afterwards: agreement of the written file on OpenVINO,
the conv layers OpenVINO's compiled model runs in f32 (its runtime model's own record), the whole conversion's
wall time, and batch-1 latency on OpenVINO (2 threads)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from pspcore.cli import Command
from pspcore.files import atomic_output

CALIB_SCENES = 12  # drawn scenes, every 4th held out: 9 to calibrate, 3 to verify (as in the tests)
MAX_DROP = 0.02  # NNCF's absolute drop from FP32's agreement with itself (1.0): our 98% gate
LATENCY_RUNS = 20
THREADS = 2


@dataclass
class Result:
    name: str
    how: str  # what the method did to reach its result
    path: Path | None
    seconds: float
    agreement: float = float("nan")
    f32_convs: int = 0
    convs: int = 0
    f32_names: tuple[str, ...] = ()  # the conv layers OpenVINO runs in f32
    latency_ms: float = float("nan")


@dataclass
class Images:
    calib_paths: list[Path]
    calib: np.ndarray
    verify: np.ndarray
    reference: np.ndarray  # FP32 logits on `verify`


def prepare(src: Path, work: Path) -> Images:
    from export.evaluation import logits, open_runner
    from export.precision.graph import calibration_batch
    from export.scenes import write_scenes
    from export.precision.verified import held_out
    from pspcore.model_info import read_onnx_info

    paths = write_scenes(work / "scenes", [(60 + 4 * i, 80) for i in range(CALIB_SCENES)])
    calib_paths, verify_paths = held_out(paths)
    info = read_onnx_info(src)
    size = tuple(info.input_size)
    verify = calibration_batch(verify_paths, info, size).batch
    with open_runner(src) as fp32:
        reference = logits(fp32, verify)
    return Images(paths, calibration_batch(calib_paths, info, size).batch, verify, reference)


def ours(src: Path, work: Path, images: Images, method: str, fallback: str, log) -> Result:
    """psp-export int8 --target openvino (--method), as a user runs it; fallback 'none' with a 0% gate gives the
    plain conversion for reference."""
    from export.precision.verified import Conversion, convert_verified

    gate = None if fallback == "auto" else 0.0
    name = f"ours-{method}-{'repaired' if fallback == 'auto' else 'plain'}"
    start = time.perf_counter()
    report = convert_verified(src, work / f"{name}.xml",
                              Conversion("int8", target="openvino", method=method, num_images=len(images.calib_paths),
                                         min_agreement=gate, fallback=fallback),
                              images.calib_paths, work / f"{name}.json", log=log)
    seconds = time.perf_counter() - start
    kept = f"{len(report.kept_fp32)} node(s) kept FP32" if report.kept_fp32 else "no node kept FP32"
    how = (f"{len(report.attempts)} conversion(s), {kept}"
           + (", cross-layer equalization" if report.equalized else "")) if fallback == "auto" else "no repair"
    return Result(name, how, Path(report.output), seconds)


def accuracy_controlled(src: Path, work: Path, images: Images, log) -> Result:
    """nncf.quantize_with_accuracy_control on the ONNX model (NNCF's ONNX backend, the one --method nncf uses),
    with the same regions kept FP32 as ours (the exact pooling, the output region), validated on OpenVINO."""
    import contextlib
    import sys

    import nncf
    import onnx

    from export.precision.ir import save_ir
    from export.precision.graph import output_region, pooling_nodes
    from pspcore.model_info import read_onnx_info

    model = onnx.load(str(src))
    name = model.graph.input[0].name
    calib = nncf.Dataset([images.calib[i:i + 1] for i in range(len(images.calib))], lambda x: {name: x})
    # validation items are indices into the held-out batch: NNCF hands the raw items to the validation function
    validation = nncf.Dataset(list(range(len(images.verify))), lambda i: {name: images.verify[i:i + 1]})

    def agreement_on_openvino(candidate, indices) -> tuple[float, list[float]]:
        compiled = _compile(candidate)
        per_image = [float((compiled(images.verify[i:i + 1])[0].argmax(1) == images.reference[i:i + 1].argmax(1))
                           .mean()) for i in indices]
        return float(np.mean(per_image)), per_image

    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        quantized = nncf.quantize_with_accuracy_control(
            model, calib, validation, agreement_on_openvino, max_drop=MAX_DROP, drop_type=nncf.DropType.ABSOLUTE,
            subset_size=len(images.calib),
            ignored_scope=nncf.IgnoredScope(names=[*pooling_nodes(model), *output_region(model)], validate=False))
    seconds = time.perf_counter() - start
    path = save_ir(quantized, read_onnx_info(src).with_(precision="int8"), work / "nncf-accuracy-control.xml")
    log(f"NNCF accuracy control: {seconds:.1f} s")
    return Result("nncf-accuracy-control", "", path, seconds)


def _compile(model):
    """A compiled OpenVINO model (CPU, f32 hint: the FP32 parts stay FP32) of an onnx.ModelProto."""
    import openvino.properties as props
    import openvino.properties.hint as hints

    from export.precision.ir import ov_model
    from runtime.backends.openvino import import_openvino

    return import_openvino().Core().compile_model(ov_model(model), "CPU", {hints.inference_precision: "f32",
                                                                          props.inference_num_threads: THREADS})


def measure(result: Result, images: Images) -> Result:
    """Agreement, f32 conv layers and latency of the written file, all on OpenVINO."""
    from export.evaluation import latency_ms, logits, open_runner
    from export.precision.verdict import judge

    with open_runner(result.path, backend="openvino", threads=THREADS) as runner:
        result.agreement = judge(images.reference, logits(runner, images.verify)).agreement
        convs = [(names[0] if names else "", precision) for kind, precision, names in runner.layer_precisions()
                 if kind == "Convolution"]
        result.f32_names = tuple(name.removesuffix("/WithoutBiases") for name, p in convs if p == "f32")
        result.convs, result.f32_convs = len(convs), len(result.f32_names)
        result.latency_ms = latency_ms(runner, images.verify[:1], runs=LATENCY_RUNS)
    return result


def markdown(results: list[Result], fp32: Result) -> str:
    lines = ["| conversion | agreement (gate 98%) | conv layers in f32 on OpenVINO | what it did | conversion s | "
             "OpenVINO latency ms |",
             "| --- | ---: | ---: | --- | ---: | ---: |",
             f"| FP32 (OpenVINO, f32 hint) | 100.00% | {fp32.f32_convs} of {fp32.convs} | - | - | "
             f"{fp32.latency_ms:.1f} |"]
    for r in results:
        if r.name == "nncf-accuracy-control":  # what NNCF reverted: OpenVINO's record of the convs left in f32
            r.how = (f"quantized, ranked, reverted to FP32 until the drop <= {MAX_DROP}: "
                     + (", ".join(f"`{n}`" for n in r.f32_names) or "nothing"))
        lines.append(f"| {r.name} | {100 * r.agreement:.2f}% | {r.f32_convs} of {r.convs} | {r.how} | {r.seconds:.1f} | "
                     f"{r.latency_ms:.1f} |")
    lines += ["", f"The outlier network (tiny PSPNet-18, 65x65, 4 channels after three BN+ReLU pairs carrying 1000x "
                  f"larger activations), {CALIB_SCENES} drawn scenes: 9 calibrate, 3 held out. Agreement: share of "
                  "the FP32 labels the written IR keeps on the held-out images, run on OpenVINO. Conv layers in f32: "
                  "OpenVINO's compiled model's own record (runtimePrecision). ours-*: `psp-export int8 --target openvino` (`-plain`: the same quantizer "
                  "without repair); nncf-accuracy-control: `nncf.quantize_with_accuracy_control` (ONNX backend, "
                  "the pooling and output region ignored like ours). Latency: batch 1, "
                  f"{THREADS} threads, median of {LATENCY_RUNS}, on a machine shared with other jobs."]
    return "\n".join(lines) + "\n"


def fp32_row(src: Path, images: Images) -> Result:
    return measure(Result("fp32", "-", src, 0.0), images)


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("work", type=click.Path(file_okay=False, path_type=Path), default="runs/ov_accuracy_control")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Write the table as Markdown.")
def main(work, markdown_path):
    """Our repair vs NNCF's accuracy control on the outlier network, openvino INT8 target."""
    from experiments.outliers import export_outlier_network

    work.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        click.echo(f"  {line}", err=True)

    src = Path(export_outlier_network(work / "outlier.onnx"))
    images = prepare(src, work)
    results = [ours(src, work, images, "entropy", "none", log), ours(src, work, images, "entropy", "auto", log),
               ours(src, work, images, "nncf", "none", log), ours(src, work, images, "nncf", "auto", log),
               accuracy_controlled(src, work, images, log)]
    results = [measure(r, images) for r in results]
    text = markdown(results, fp32_row(src, images))
    click.echo(text)
    if markdown_path:
        with atomic_output(markdown_path, suffix=".md") as tmp:
            Path(tmp).write_text(text)


if __name__ == "__main__":
    main()
