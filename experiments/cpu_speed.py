"""PSPNet-50 at 473x473 on this CPU, through the commands a user runs: a PSPNet-50 checkpoint (150 classes,
random weights with randomised BatchNorm statistics: speed does not depend on the weights), `psp-export onnx`,
`psp-export int8 --target onnxruntime` calibrated on drawn street scenes, then `psp-bench` with PyTorch eager as
the baseline, and the ONNX Runtime per-op profile of FP32 and INT8 (where the time goes).

    python -m experiments.cpu_speed OUT_DIR [--threads 2]      # ~10 min on 2 cores

Writes OUT_DIR/bench.md (+ .json, .png) and OUT_DIR/profile.md."""
from __future__ import annotations

import os
from pathlib import Path

import click

from experiments.demo import run_tool
from pspcore.cli import Command


def write_checkpoint(path: Path, arch: str, classes: int) -> Path:
    import torch

    from experiments.export_report import randomize_batchnorm
    from pspnet import create_model, save_checkpoint
    from pspnet.checkpoint import info_for_config

    torch.manual_seed(0)
    model = randomize_batchnorm(create_model(arch, num_classes=classes, aux=False)).eval()
    return save_checkpoint(path, model, info_for_config(model.config))


def run_cpu_speed(out: Path, arch: str, classes: int, threads: int, calib_images: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = write_checkpoint(out / f"{arch}.pth", arch, classes)
    fp32, int8 = out / f"{arch}.onnx", out / f"{arch}.cpu-int8.onnx"
    run_tool("psp-export", "onnx", checkpoint, "-o", fp32)
    from export.scenes import write_scenes

    calib = out / "calib"
    write_scenes(calib, [(473, 473)] * calib_images)
    # Random weights: this measures speed, and their labels barely depend on the input, so the agreement is
    # printed but not gated (experiments.precision_report judges the gate and repair).
    run_tool("psp-export", "int8", fp32, "-o", int8, "--target", "onnxruntime", "--calib-images", calib,
             "--num-images", calib_images, "--min-agreement", 0, "--fallback", "none")
    run_tool("psp-bench", fp32, int8, "--baseline", checkpoint, "--threads", threads, "--json", out / "bench.json",
             "--markdown", out / "bench.md", "--plot", out / "bench.png")
    run_tool("python", "-m", "experiments.ort_profile", fp32, int8, "--threads", threads,
             "--markdown", out / "profile.md")


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path), default="runs/cpu-speed")
@click.option("--arch", default="pspnet50", show_default=True)
@click.option("--classes", default=150, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=min(os.cpu_count() or 1, 4), show_default=True)
@click.option("--calib-images", type=click.IntRange(min=2), default=16, show_default=True)
def main(out_dir, arch, classes, threads, calib_images):
    """PSPNet-50 speed on this CPU: PyTorch eager vs ONNX Runtime FP32 vs ONNX Runtime INT8, side by side."""
    run_cpu_speed(out_dir, arch, classes, threads, calib_images)


if __name__ == "__main__":
    main()
