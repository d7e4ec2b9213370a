"""PSPNet-50 at 473x473 on this CPU, through the commands a user runs: a PSPNet-50 checkpoint (150 classes,
random weights with randomised BatchNorm statistics: speed does not depend on the weights), `psp-export onnx`,
`psp-export int8 --target onnxruntime` and `--target openvino` calibrated on drawn street scenes, then psp-bench's
interleaved measurement with PyTorch eager as the baseline: ONNX Runtime FP32/INT8, OpenVINO FP32 (f32 hint) on
the FP32 .onnx, OpenVINO on the ONNX Runtime INT8 file and on the openvino IR, on a CPU with bf16 (AMX or
AVX512-BF16) OpenVINO on `psp-export bf16`'s IR too, and the machine's limit columns; and the ONNX Runtime per-op
profile of FP32 and INT8 (where the time goes).

    python -m experiments.cpu_speed OUT_DIR [--threads 2]      # ~30 min on 2 cores

Writes OUT_DIR/bench.md (+ .json, .png) and OUT_DIR/profile.md. The checkpoint and its FP32 export are kept in
OUT_DIR and reused (they depend only on the seed); the INT8 models are made again every run."""
from __future__ import annotations

import importlib.util
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


BF16_NOTE = {True: "OpenVINO bf16: psp-export bf16's IR (random weights: its agreement is printed, not gated).",
             False: "OpenVINO bf16: no row, this CPU has neither AMX nor AVX512-BF16, so OpenVINO would run a bf16 "
                    "IR in f32: the OpenVINO FP32 row."}


def bench_rows(checkpoint: Path, fp32: Path, int8: Path, ir: Path | None, bf16: Path | None, threads: int,
               out: Path) -> None:
    """psp-bench's interleaved measurement (benchmarks.bench, with its limit columns) of exactly these rows,
    each model on the backend named: the CLI would run every model on every --backend."""
    from benchmarks.bench import BenchConfig, Candidate, run_benchmark
    from benchmarks.plot import write_plot
    from benchmarks.report import format_markdown, format_terminal, write_json, write_text

    candidates = [Candidate(str(checkpoint), "torch", baseline=True), Candidate(str(fp32), "onnxruntime"),
                  Candidate(str(int8), "onnxruntime")]
    if ir is not None:
        candidates += [Candidate(str(fp32), "openvino"), Candidate(str(int8), "openvino"),
                       Candidate(str(ir), "openvino")]
    if bf16 is not None:
        candidates.append(Candidate(str(bf16), "openvino"))
    report = run_benchmark(candidates, BenchConfig(threads=threads, limits=True),
                           log=lambda line: click.echo(line, err=True))
    click.echo(format_terminal(report), err=True)
    write_json(report, out / "bench.json")
    write_plot(report, out / "bench.png")
    notes = [BF16_NOTE[bf16 is not None]] if ir is not None else ["OpenVINO rows: openvino is not installed here."]
    write_text(format_markdown(report).rstrip() + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n",
               out / "bench.md")


def run_cpu_speed(out: Path, arch: str, classes: int, threads: int, calib_images: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    checkpoint, fp32 = out / f"{arch}.pth", out / f"{arch}.onnx"
    if not checkpoint.is_file():
        write_checkpoint(checkpoint, arch, classes)
    if not fp32.is_file():
        run_tool("psp-export", "onnx", checkpoint, "-o", fp32)
    from export.scenes import write_scenes

    calib = out / "calib"
    write_scenes(calib, [(473, 473)] * calib_images)
    # Random weights: this measures speed, and their labels barely depend on the input, so the agreement is
    # printed but not gated (experiments.precision_report judges the gate and repair).
    ungated = ("--calib-images", calib, "--num-images", calib_images, "--min-agreement", 0, "--fallback", "none")
    int8 = out / f"{arch}.cpu-int8.onnx"
    run_tool("psp-export", "int8", fp32, "-o", int8, "--target", "onnxruntime", *ungated)
    ir = bf16 = None
    if importlib.util.find_spec("openvino") is not None:
        ir = out / f"{arch}.openvino-int8.xml"
        run_tool("psp-export", "int8", fp32, "-o", ir, "--target", "openvino", *ungated)
        from runtime.backends.openvino import cpu_has_bf16

        if cpu_has_bf16():  # elsewhere OpenVINO runs a bf16 IR in f32: the OpenVINO FP32 row again
            bf16 = out / f"{arch}.bf16.xml"
            run_tool("psp-export", "bf16", fp32, "-o", bf16, "--verify-images", calib, "--min-agreement", 0,
                     "--fallback", "none")
    bench_rows(checkpoint, fp32, int8, ir, bf16, threads, out)
    run_tool("python", "-m", "experiments.ort_profile", fp32, int8, "--threads", threads,
             "--markdown", out / "profile.md")


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path), default="runs/cpu-speed")
@click.option("--arch", default="pspnet50", show_default=True)
@click.option("--classes", default=150, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=min(os.cpu_count() or 1, 4), show_default=True)
@click.option("--calib-images", type=click.IntRange(min=3), default=8, show_default=True,
              help="Drawn scenes to calibrate on (psp-export keeps some of them to verify on: at least 3).")
def main(out_dir, arch, classes, threads, calib_images):
    """PSPNet-50 speed on this CPU: PyTorch eager, ONNX Runtime FP32/INT8, OpenVINO FP32/INT8 (and bf16 on a CPU
    with bf16), side by side."""
    run_cpu_speed(out_dir, arch, classes, threads, calib_images)


if __name__ == "__main__":
    main()
