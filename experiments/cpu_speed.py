"""PSPNet-50 at 473x473 on this CPU, through the commands a user runs: a PSPNet-50 checkpoint (150 classes,
random weights with randomised BatchNorm statistics: speed does not depend on the weights), `psp-export onnx`,
`psp-export int8 --target onnxruntime` and `--target openvino` calibrated on drawn street scenes, then psp-bench's
interleaved measurement with PyTorch eager as the baseline: ONNX Runtime FP32/INT8, OpenVINO FP32 (f32 hint) on
the FP32 .onnx, OpenVINO on the ONNX Runtime INT8 file and on the openvino IR, and the machine's limit columns;
and the ONNX Runtime per-op profile of FP32 and INT8 (where the time goes).

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

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # what OpenVINO's CPU plugin needs to run bf16


def write_checkpoint(path: Path, arch: str, classes: int) -> Path:
    import torch

    from experiments.export_report import randomize_batchnorm
    from pspnet import create_model, save_checkpoint
    from pspnet.checkpoint import info_for_config

    torch.manual_seed(0)
    model = randomize_batchnorm(create_model(arch, num_classes=classes, aux=False)).eval()
    return save_checkpoint(path, model, info_for_config(model.config))


def bf16_note() -> str:
    """Why the OpenVINO bf16 row is absent on this CPU, or that it has bf16 (then the row needs a bf16 model)."""
    from runtime.backends.openvino import cpu_flags

    present = sorted(cpu_flags() & set(BF16_FLAGS))
    if not present:
        return (f"OpenVINO bf16: no row, this CPU has no bf16 instructions (none of {', '.join(BF16_FLAGS)} in "
                "/proc/cpuinfo), so OpenVINO would run the bf16 hint in f32: the OpenVINO FP32 row.")
    return f"OpenVINO bf16: this CPU has {', '.join(present)}; this section measures the f32 hint only."


def bench_rows(checkpoint: Path, fp32: Path, int8: Path, ir: Path | None, threads: int, out: Path) -> None:
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
    report = run_benchmark(candidates, BenchConfig(threads=threads, limits=True),
                           log=lambda line: click.echo(line, err=True))
    click.echo(format_terminal(report), err=True)
    write_json(report, out / "bench.json")
    write_plot(report, out / "bench.png")
    notes = [bf16_note()] if ir is not None else ["OpenVINO rows: openvino is not installed here."]
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
    ir = None
    if importlib.util.find_spec("openvino") is not None:
        ir = out / f"{arch}.openvino-int8.xml"
        run_tool("psp-export", "int8", fp32, "-o", ir, "--target", "openvino", *ungated)
    bench_rows(checkpoint, fp32, int8, ir, threads, out)
    run_tool("python", "-m", "experiments.ort_profile", fp32, int8, "--threads", threads,
             "--markdown", out / "profile.md")


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path), default="runs/cpu-speed")
@click.option("--arch", default="pspnet50", show_default=True)
@click.option("--classes", default=150, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=min(os.cpu_count() or 1, 4), show_default=True)
@click.option("--calib-images", type=click.IntRange(min=2), default=8, show_default=True)
def main(out_dir, arch, classes, threads, calib_images):
    """PSPNet-50 speed on this CPU: PyTorch eager, ONNX Runtime FP32/INT8, OpenVINO FP32/INT8, side by side."""
    run_cpu_speed(out_dir, arch, classes, threads, calib_images)


if __name__ == "__main__":
    main()
