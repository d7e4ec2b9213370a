"""GPU check for a machine with TensorRT: build engines in FP32, FP16 and INT8 from a checkpoint or an ONNX
model, then report each engine's parity and latency against PyTorch (or ONNX Runtime FP32) on the same inputs.

    python -m experiments.gpu_check --checkpoint model.pth --calib-images DIR [-o gpu_check.json]

Exits 1 when an engine misses its parity target, so it doubles as an acceptance check."""
from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import click
import numpy as np

from benchmarks.bench import (BenchConfig, BenchReport, Candidate, Loaded, add_speedups, measure_interleaved,
                              summarize_series)
from benchmarks.machine import machine_info
from benchmarks.report import format_terminal, to_json
from export.parity import ParityReport, compare_outputs
from export.scenes import draw_scene, write_scenes
from export.verdict import DEFAULT_GATES
from pspcore.cli import SIZE, Command
from pspcore.errors import InputError
from pspcore.files import atomic_output
from pspcore.model_info import ModelInfo
from pspcore.preprocess import prepare_frame

# Parity targets: (max error / logit range or None, min argmax agreement). FP16/INT8 engines have no error
# bound, so strict argmax agreement decides (ParityReport.ok), at the gates of the verified conversion.
TARGETS = {"fp32": (1e-4, 0.9999), "fp16": (None, DEFAULT_GATES["fp16"]), "int8": (None, DEFAULT_GATES["int8"])}


@dataclass(frozen=True)
class GpuCheckConfig:
    checkpoint: Path | None = None
    onnx: Path | None = None
    calib_images: tuple[Path, ...] = ()
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    size: tuple[int, int] | None = None
    batch: int = 1
    num_inputs: int = 8
    num_calib: int = 64
    duration_s: float = 3.0
    cuda_graph: bool = False
    workdir: Path | None = None
    device: int = 0


@dataclass
class PrecisionCheck:
    precision: str
    engine: str
    parity: ParityReport
    passed: bool
    build_s: float
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        return f"{self.precision:5s} {verdict:6s} {self.parity.describe()} (built in {self.build_s:.0f} s)"


def check_inputs(info: ModelInfo, size: tuple[int, int], count: int) -> np.ndarray:
    """Drawn street scenes of several aspect ratios, letterboxed like runtime frames (not the calibration
    set, so INT8 is judged on images it was not calibrated on)."""
    shapes = [(size[0], size[1]), (size[0] * 3 // 4, size[1]), (size[0], size[1] * 2 // 3)]
    frames = [draw_scene(*shapes[i % len(shapes)], seed=1000 + i) for i in range(count)]
    return np.stack([prepare_frame(f, info, size)[0] for f in frames])


def passes(precision: str, report: ParityReport) -> bool:
    max_rel, min_agreement = TARGETS[precision]
    return report.ok(max_rel=max_rel if max_rel is not None else float("inf"), min_agreement=min_agreement)


def drawn_calibration(folder: Path, size: tuple[int, int], count: int = 16) -> list[Path]:
    """Drawn scenes to calibrate on when the user gives no images (a smoke check, not an accuracy check)."""
    return write_scenes(folder, [tuple(size)] * count)


def source_onnx(config: GpuCheckConfig, work: Path) -> tuple[Path, ModelInfo]:
    """The FP32 ONNX model to convert and build: the given one, or the checkpoint exported (dynamic batch)."""
    from pspcore.model_info import read_onnx_info

    if config.onnx is not None:
        return config.onnx, read_onnx_info(config.onnx)
    from export.onnx import export_checkpoint

    result = export_checkpoint(config.checkpoint, work / "model.onnx", size=config.size)
    return result.path, result.info


def reference_runner(config: GpuCheckConfig, onnx_path: Path):
    """PyTorch FP32 on this GPU with TF32 off (strict FP32), or ONNX Runtime FP32 on the CPU for an ONNX-only
    check; (runner, description)."""
    if config.checkpoint is None:
        from runtime.backends.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(onnx_path, providers="cpu"), "ONNX Runtime FP32 (CPU)"
    import torch

    from pspnet.runner import TorchRunner

    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return TorchRunner(config.checkpoint, device=f"cuda:{config.device}"), "PyTorch FP32 (CUDA, TF32 off)"


def build_and_check(config: GpuCheckConfig, precision: str, onnx_path: Path, work: Path, inputs: np.ndarray,
                    reference: np.ndarray):
    """Build one engine (converting the FP32 model first), run the check inputs; (check, runner)."""
    from export.engine import build_engine
    from runtime.backends.tensorrt import TensorRTRunner

    engine = work / f"model.{precision}.engine"
    result = build_engine(onnx_path, engine, precision=precision, batch=f"1:{config.batch}:{max(config.batch, len(inputs))}",
                          timing_cache=work / "timing.cache", calib_images=config.calib_images,
                          num_images=config.num_calib, device=config.device)
    runner = TensorRTRunner(engine, device=config.device, cuda_graph=config.cuda_graph)
    report = compare_outputs(reference, runner.infer(inputs))
    check = PrecisionCheck(precision, str(engine), report, passes(precision, report), result.seconds,
                           result.notes + runner.notes)
    return check, runner


def device_checks(config: GpuCheckConfig, engine: Path, inputs: np.ndarray, expected: np.ndarray) -> list[dict]:
    """What only a GPU machine can show of the runner's device handling: the engine records the GPU it was
    built on; a CUDA graph replays the same answer; two runners on two GPUs in one thread each allocate and
    launch on their own (needs two GPUs of the same model, else skipped with the reason)."""
    from pspcore.engine_file import current_platform, read_sidecar
    from pspcore.nvidia import cuda_check, import_cudart
    from runtime.backends.tensorrt import TensorRTRunner

    def check(name: str, ok: bool, detail: str) -> dict:
        return {"check": name, "passed": bool(ok), "detail": detail}

    built = read_sidecar(engine).platform
    here = current_platform(config.device)
    results = [check("engine records the GPU it was built on", built == here, f"{built.gpu_name} / {here.gpu_name}")]
    with TensorRTRunner(engine, device=config.device, cuda_graph=True) as graph:
        replayed = [graph.infer(inputs) for _ in range(2)]
    results.append(check("CUDA graph replays the same answer", graph.cuda_graph and all(
        np.array_equal(r, expected) for r in replayed), "; ".join(graph.notes) or "captured and replayed twice"))
    count = cuda_check(import_cudart().cudaGetDeviceCount(), "cudaGetDeviceCount")
    other = 1 if config.device == 0 else 0
    if count < 2 or current_platform(other).gpu_name != here.gpu_name:
        return results + [check("two runners on two GPUs in one thread", True, "skipped: needs two GPUs of one model")]
    first, second = TensorRTRunner(engine, device=config.device), TensorRTRunner(engine, device=other)
    answers = [first.infer(inputs), second.infer(inputs), first.infer(inputs)]
    first.deactivate()
    second.deactivate()
    return results + [check("two runners on two GPUs in one thread", all(np.array_equal(a, expected) for a in answers),
                            f"GPUs {config.device} and {other}")]


def measure_latency(runners: dict, batch: np.ndarray, duration_s: float):
    """trtexec-style latency of every runner, measured interleaved (benchmarks.bench), as a BenchReport."""
    config = BenchConfig(batches=(len(batch),), duration_s=duration_s)
    series, schedule = measure_interleaved(runners, batch, config)
    results = []
    for label, runner in runners.items():
        loaded = Loaded(Candidate(runner.model_path, runner.name, baseline=runner.name == "torch"), runner, label, 0.0)
        results.append(summarize_series(loaded, series[label], len(batch), tuple(batch.shape[2:])))
    add_speedups(results)
    return BenchReport(config=config, results=results, unavailable=[], machine=machine_info(None),
                       memory_note="", schedule={len(batch): schedule})


def run_gpu_check(config: GpuCheckConfig, log=print) -> dict:
    """Everything the script reports, as a JSON-ready dict (also printed through `log`)."""
    from pspcore.engine_file import current_platform
    from pspcore.geometry import resolve_input_size

    if (config.checkpoint is None) == (config.onnx is None):
        raise InputError("give exactly one of --checkpoint or --onnx")
    platform = current_platform(config.device)  # fails early, with the install hint, without TensorRT
    with tempfile.TemporaryDirectory(prefix="psp-gpu-check-") as tmp:
        work = Path(config.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        onnx_path, info = source_onnx(config, work)
        size = resolve_input_size(None, info, config.size, model=Path(onnx_path).name)
        if "int8" in config.precisions and not config.calib_images:
            config = replace(config, calib_images=tuple(drawn_calibration(work / "calib", size)))
            log("notice: INT8 calibrated on drawn scenes (pass --calib-images for a real accuracy check)")
        inputs = check_inputs(info, size, config.num_inputs)
        baseline, reference_name = reference_runner(config, onnx_path)
        reference = baseline.infer(inputs)
        log(f"{platform.gpu_name}, TensorRT {platform.tensorrt_version}; reference: {reference_name}; "
            f"{len(inputs)} drawn scenes at {size[0]}x{size[1]}")
        checks, runners = [], {"torch fp32": baseline} if config.checkpoint else {}
        for precision in config.precisions:
            check, runner = build_and_check(config, precision, onnx_path, work, inputs, reference)
            log(check.line())
            checks.append(check)
            runners[f"tensorrt {precision}"] = runner
        bench = measure_latency(runners, inputs[:config.batch], config.duration_s)
        log(format_terminal(bench))
        first = checks[0]
        devices = device_checks(config, Path(first.engine), inputs, runners[f"tensorrt {first.precision}"].infer(inputs))
        for item in devices:
            log(f"{'ok  ' if item['passed'] else 'FAIL'} {item['check']}: {item['detail']}")
        for runner in runners.values():
            runner.deactivate()
    return {"platform": asdict(platform), "reference": reference_name, "size": list(size),
            "checks": [asdict(c) for c in checks], "device_checks": devices, "latency": to_json(bench),
            "passed": all(c.passed for c in checks) and all(d["passed"] for d in devices)}


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="PyTorch checkpoint: exported to ONNX here, and the PyTorch reference on the GPU.")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, path_type=Path),
              help="FP32 ONNX model instead of a checkpoint (reference: ONNX Runtime FP32 on the CPU).")
@click.option("--calib-images", type=click.Path(file_okay=False), help="INT8 calibration images (folder).")
@click.option("--calib-list", type=click.Path(dir_okay=False), help="INT8 calibration images (list file).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="Precisions to check (repeatable) [default: all three].")
@click.option("--size", type=SIZE, default=None, help="Input size HxW [default: the model's].")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch for latency.")
@click.option("--duration", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Seconds of latency samples per runner.")
@click.option("--cuda-graph", is_flag=True, help="Replay the engines as CUDA graphs.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the ONNX models and engines here [default: a temporary folder].")
@click.option("--device", type=click.IntRange(min=0), default=0, show_default=True, help="CUDA device index.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the full report as JSON.")
def main(checkpoint, onnx_path, calib_images, calib_list, precisions, size, batch, duration, cuda_graph, workdir,
         device, output):
    """Build TensorRT engines in FP32/FP16/INT8 and check their parity and latency against PyTorch."""
    images = ()
    if calib_images or calib_list:
        from export.calibration import find_calibration_images

        images = tuple(find_calibration_images(calib_images, calib_list))
    config = GpuCheckConfig(checkpoint=checkpoint, onnx=onnx_path, calib_images=images,
                            precisions=tuple(precisions) or ("fp32", "fp16", "int8"), size=size, batch=batch,
                            duration_s=duration, cuda_graph=cuda_graph, workdir=workdir, device=device)
    report = run_gpu_check(config, log=click.echo)
    if output:
        with atomic_output(output) as tmp:
            tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if not report["passed"]:
        raise click.exceptions.Exit(1)


if __name__ == "__main__":
    main()
