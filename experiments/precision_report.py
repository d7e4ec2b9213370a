"""Verified INT8 conversion with automatic repair, measured: (a) a trained checkpoint (the demo's model) when
one is given, (b) a PSPNet-50 at 473x473 (random weights, randomised BatchNorm) calibrated on drawn street
scenes. Each conversion is timed whole (calibration, verification on held-out images, repair), and ONNX
Runtime's latency of FP32, plain INT8 and repaired INT8 is measured on this machine.

    python -m experiments.precision_report WORK_DIR [--checkpoint demo.pth] --markdown precision.md

A random network's labels barely depend on its input (a pattern fixed by position), so (b) shows what the
conversion and repair cost at full size, and (a) what a trained model keeps."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import click

from export.evaluation import LATENCY_RUNS, LATENCY_SECONDS, LATENCY_WARMUP_S
from pspcore.cli import Command
from pspcore.files import atomic_output


@dataclass
class Row:
    model: str
    target: str
    report: object  # export.precision.report.PrecisionReport
    seconds: float


def convert(label: str, onnx_path: Path, calib: list[Path], target: str, work: Path, log) -> Row:
    from export.precision.report import format_report
    from export.precision.verdict import GateError
    from export.precision.verified import Conversion, convert_verified

    start = time.perf_counter()
    options = Conversion("int8", target=target, num_images=len(calib))  # latency: the onnxruntime target
    try:
        report = convert_verified(onnx_path, work / f"{onnx_path.stem}.{target}.int8.onnx", options, calib,
                                  work / f"{onnx_path.stem}.{target}.report.json", log=log)
    except GateError as exc:
        log(f"{label} {target}: {exc}")
        return Row(label, target, None, time.perf_counter() - start)
    log(format_report(report))
    return Row(label, target, report, time.perf_counter() - start)


def markdown(rows: list[Row]) -> str:
    lines = ["| model | target | plain INT8 agreement | after repair | conversions | kept FP32 (FLOPs) | CLE | "
             "conversion s | FP32 ms | INT8 plain ms | INT8 repaired ms | speed-up |",
             "| --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        r = row.report
        if r is None:
            lines.append(f"| {row.model} | {row.target} | - | below the gate | - | - | - | {row.seconds:.0f} | - | - | "
                         "- | - |")
            continue
        lat = r.latency_ms
        final = lat.get("int8 repaired", lat.get("int8 plain"))
        kept = f"{len(r.kept_fp32)} ({100 * r.fp32_flops_share:.1f}%)" if r.kept_fp32 else "nothing"
        ms = [f"{lat[k]:.0f}" if k in lat else "-" for k in ("fp32", "int8 plain", "int8 repaired")]
        speedup = f"{lat['fp32'] / final:.2f}x" if final else "-"
        cells = [row.model, row.target, f"{100 * r.before['agreement']:.2f}%", f"{100 * r.after['agreement']:.2f}%",
                 str(len(r.attempts)), kept, "yes" if r.equalized else "no", f"{row.seconds:.0f}", *ms, speedup]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "Agreement: share of FP32 pixel labels kept on held-out images (every 4th calibration image); "
             "gate 98%. Latency (onnxruntime target; TensorRT Q/DQ is not meant for CPUs): ONNX Runtime CPU, "
             f"2 threads, batch 1, median of at least {LATENCY_RUNS} calls and {LATENCY_SECONDS:g} s after "
             f"{LATENCY_WARMUP_S:g} s of warm-up. Conversion time: calibration, verification and repair together."]
    return "\n".join(lines + notes) + "\n"


def outlier_model(checkpoint: str, work: Path) -> Path:
    """The checkpoint with 4 channels after three early BN+ReLU pairs carrying 1000x larger activations (the
    same FP32 function): the network plain INT8 breaks on, to show the repair and the repaired model's speed."""
    from experiments.outliers import EARLY_PAIRS, with_outliers
    from export.onnx.exporter import export_onnx
    from export.scenes import sample_batch
    from pspnet.checkpoint import load_model

    model, info = load_model(checkpoint, aux=False)
    size = tuple(info.input_size)
    outliers = with_outliers(model, sample_batch(info, size, 4), pairs=EARLY_PAIRS)
    return export_onnx(outliers, info, work / "trained_outliers.onnx", size=size).path


def synthetic_model(work: Path, arch: str, size: tuple[int, int], classes: int) -> Path:
    import torch

    from experiments.export_report import randomize_batchnorm
    from export.onnx.exporter import export_onnx
    from pspnet import create_model
    from pspnet.checkpoint import info_for_config

    torch.manual_seed(0)
    model = randomize_batchnorm(create_model(arch, num_classes=classes, aux=False)).eval()
    return export_onnx(model, info_for_config(model.config), work / f"{arch}_{size[0]}.onnx", size=size).path


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("work", type=click.Path(file_okay=False, path_type=Path), default="runs/precision")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="A trained checkpoint (e.g. the demo's model).")
@click.option("--arch", default="pspnet50", show_default=True, help="The synthetic model's architecture.")
@click.option("--size", type=int, default=473, show_default=True, help="The synthetic model's input size.")
@click.option("--classes", type=int, default=21, show_default=True)
@click.option("--calib", type=int, default=16, show_default=True, help="Drawn calibration scenes (1 in 4 held out).")
@click.option("--targets", default="onnxruntime", show_default=True, help="INT8 targets, comma-separated.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Write the table as Markdown.")
def main(work, checkpoint, arch, size, classes, calib, targets, markdown_path):
    """Convert with verification and repair, time it, and measure latency."""
    from export.onnx.exporter import export_checkpoint
    from export.scenes import write_scenes

    work.mkdir(parents=True, exist_ok=True)
    log = lambda line: click.echo(line, err=True)  # noqa: E731
    models = []
    if checkpoint:
        models.append(("trained checkpoint", export_checkpoint(checkpoint, work / "trained.onnx").path))
        models.append(("trained, 1000x outlier channels", outlier_model(checkpoint, work)))
    models.append((f"{arch} {size}x{size} (random)", synthetic_model(work, arch, (size, size), classes)))
    rows = []
    for label, path in models:
        from pspcore.model_info import read_onnx_info

        input_size = read_onnx_info(path).input_size or (size, size)
        scenes = work / f"scenes_{input_size[0]}x{input_size[1]}"
        write_scenes(scenes, [tuple(input_size)] * calib)
        images = sorted(scenes.iterdir())
        for target in [t.strip() for t in targets.split(",") if t.strip()]:
            rows.append(convert(label, path, images, target, work, log))
    text = markdown(rows)
    click.echo(text)
    if markdown_path:
        with atomic_output(markdown_path, suffix=".md") as tmp:
            tmp.write_text(text)


if __name__ == "__main__":
    main()
