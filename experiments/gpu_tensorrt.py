"""The TensorRT part of the GPU check (experiments/gpu_check.py): engines in FP32/FP16/INT8 built from the
model, each against the expected output computed on the CPU, their latency, and the device checks (the engine
records its GPU and a copy claiming another is refused; a CUDA graph replayed on a new input equals the direct
launch on it; two runners on two GPUs). Needs TensorRT and a GPU; the tests run it on the CUDA/TensorRT
stand-in (tests/runtime/fake_cuda.py)."""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from experiments.gpu_config import GpuCheckConfig
from experiments.gpu_torch import (
    ERROR,
    FAILED,
    PASSED,
    REPLAY_TARGET,
    SKIPPED,
    TARGETS,
    TorchTarget,
    cuda_target,
    gathered,
    measure_latency,
    passes,
)
from export.parity import compare_outputs
from export.scenes import write_scenes
from pspcore.model_info import ModelInfo


@dataclass
class PrecisionCheck:
    precision: str
    status: str  # passed / failed / error
    detail: str
    engine: str = ""
    parity: dict | None = None
    build_s: float | None = None
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"tensorrt {self.precision:5s} {self.status:7s} {self.detail}"


def device_check(name: str, status: str, detail: str) -> dict:
    return {"check": name, "status": status, "detail": detail}


def drawn_calibration(folder: Path, size: tuple[int, int], count: int = 16) -> list[Path]:
    """Drawn scenes to calibrate on when the user gives no images (a smoke check, not an accuracy check)."""
    return write_scenes(folder, [tuple(size)] * count)


def build_engine_for(config: GpuCheckConfig, precision: str, onnx_path: Path, work: Path):
    """Build one engine (converting the FP32 model first); (engine path, build seconds, notes)."""
    from export.engine.build import build_engine

    engine = work / f"model.{precision}.engine"
    result = build_engine(onnx_path, engine, precision=None if precision == "fp32" else precision,
                          batch=f"1:{config.batch}:{max(config.batch, config.num_inputs)}",
                          timing_cache=work / "timing.cache", calib_images=config.calib_images,
                          num_images=config.num_calib, device=config.device)
    return engine, result.seconds, list(result.notes)


def check_precision(config: GpuCheckConfig, precision: str, onnx_path: Path, work: Path, fresh: np.ndarray,
                    expected: np.ndarray):
    """One engine against the expected output; (check, active runner)."""
    from runtime.backends.tensorrt import TensorRTRunner

    engine, seconds, notes = build_engine_for(config, precision, onnx_path, work)
    runner = TensorRTRunner(engine, device=config.device, cuda_graphs=config.cuda_graph)
    runner.activate()
    report = compare_outputs(expected, runner.infer(fresh))
    status = PASSED if passes(precision, report) else FAILED
    gate = TARGETS[precision][1]
    return PrecisionCheck(precision, status, f"{report.describe()} (gate {100 * gate:g}%)", str(engine),
                          asdict(report), seconds, notes + runner.notes), runner


def independent_gpu_name(device: int) -> str | None:
    """The GPU's name from another source than the one the engine sidecar is written from (torch, else
    nvidia-smi); None when neither is there."""
    target = cuda_target(device)
    if isinstance(target, TorchTarget):
        return target.name
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", str(device)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def device_checks(config: GpuCheckConfig, engine: Path, first: np.ndarray, fresh: np.ndarray,
                  gpu_name: str | None) -> list[dict]:
    """What only a GPU machine shows of the runner's device handling, each check reported even when another
    raises (its error is its result). `gpu_name`: this GPU's name from an independent source (None: that check
    is skipped)."""
    checks = [("engine records the GPU it was built on", lambda name: platform_check(name, engine, gpu_name)),
              ("an engine whose sidecar names another GPU is refused",
               lambda name: refusal_check(name, config, engine)),
              ("CUDA graph replayed on a new input equals the direct launch on it",
               lambda name: graph_replay_check(name, config, engine, first, fresh)),
              ("two runners on two GPUs in one thread", lambda name: two_gpu_check(name, config, engine, fresh))]
    results = []
    for name, check in checks:
        try:
            results.append(check(name))
        except Exception as exc:
            results.append(device_check(name, ERROR, f"{type(exc).__name__}: {exc}"))
    return results


def platform_check(name: str, engine: Path, gpu_name: str | None) -> dict:
    from pspcore.engine_file import read_sidecar

    if gpu_name is None:
        return device_check(name, SKIPPED, "no independent source of the GPU name (torch or nvidia-smi)")
    built = read_sidecar(engine).platform
    return device_check(name, PASSED if built.gpu_name == gpu_name else FAILED,
                        f"sidecar: {built.gpu_name}; this GPU: {gpu_name}")


def refusal_check(name: str, config: GpuCheckConfig, engine: Path) -> dict:
    from pspcore.engine_file import sidecar_path
    from pspcore.errors import InputError as Refused
    from runtime.backends.tensorrt import TensorRTRunner

    with tempfile.TemporaryDirectory(prefix="psp-elsewhere-") as tmp:
        copy = Path(tmp) / engine.name
        shutil.copy(engine, copy)
        data = json.loads(sidecar_path(engine).read_text())
        sidecar_path(copy).write_text(json.dumps({**data, "gpu_name": "NVIDIA Imaginary 9000"}))
        try:
            with TensorRTRunner(copy, device=config.device):  # if it wrongly loads, it is released again
                refused = "loaded it"
        except Refused as exc:
            refused = None if "rebuild it here" in str(exc) else f"refused for another reason: {exc}"
    return device_check(name, PASSED if refused is None else FAILED, refused or "refused with the rebuild advice")


def graph_replay_check(name: str, config: GpuCheckConfig, engine: Path, first: np.ndarray, fresh: np.ndarray) -> dict:
    """The graph captured on `first` and replayed on `fresh` must equal the direct launch on `fresh`."""
    from runtime.backends.tensorrt import TensorRTRunner

    with TensorRTRunner(engine, device=config.device) as plain:
        expected = plain.infer(fresh)
    with TensorRTRunner(engine, device=config.device, cuda_graphs=True) as graph:
        graph.infer(first)
        got = graph.infer(fresh)
        replays, notes = graph.graph_launches, "; ".join(graph.notes)
    if replays < 2:
        return device_check(name, FAILED, notes or f"the graph was launched {replays} time(s), not replayed")
    report = compare_outputs(expected, got)
    return device_check(name, PASSED if report.ok(*REPLAY_TARGET) else FAILED, report.describe())


def two_gpu_check(name: str, config: GpuCheckConfig, engine: Path, batch: np.ndarray) -> dict:
    from pspcore.engine_file import current_platform
    from pspcore.nvidia import cuda_check, import_cudart
    from runtime.backends.tensorrt import TensorRTRunner

    count = cuda_check(import_cudart().cudaGetDeviceCount(), "cudaGetDeviceCount")
    other = 1 if config.device == 0 else 0
    if count < 2 or current_platform(other).gpu_name != current_platform(config.device).gpu_name:
        return device_check(name, SKIPPED, "needs two GPUs of one model")
    with TensorRTRunner(engine, device=config.device) as first, TensorRTRunner(engine, device=other) as second:
        expected = first.infer(batch)
        answers = [second.infer(batch), first.infer(batch)]
    same = all(np.array_equal(a, expected) for a in answers)
    return device_check(name, PASSED if same else FAILED, f"GPUs {config.device} and {other}")


def run_tensorrt_check(config: GpuCheckConfig, onnx_path: Path, info: ModelInfo, first: np.ndarray,
                       fresh: np.ndarray, expected: np.ndarray, gpu_name: str | None, log=print) -> dict:
    """Every precision (each reported even when another fails its gate or its build), latency, device checks."""
    with tempfile.TemporaryDirectory(prefix="psp-gpu-check-") as tmp:
        work = Path(config.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        if "int8" in config.precisions and not config.calib_images:
            config = replace(config, calib_images=tuple(drawn_calibration(work / "calib", tuple(first.shape[2:]))))
            log("notice: INT8 calibrated on drawn scenes (pass --calib-images for a real accuracy check)")
        checks, runners, errors, latency, devices = [], {}, [], None, []
        try:
            for precision in config.precisions:
                try:
                    check, runners[precision] = check_precision(config, precision, onnx_path, work, fresh, expected)
                except Exception as exc:  # one precision failing must not hide the others
                    check = PrecisionCheck(precision, ERROR, f"{type(exc).__name__}: {exc}")
                checks.append(check)
                log(check.line())
            if runners:
                latency = gathered(errors, "latency", lambda: measure_latency(
                    {f"tensorrt {p}": r for p, r in runners.items()}, first[:config.batch], config.duration_s,
                    min_iters=config.min_iters))
            built = next((Path(c.engine) for c in checks if c.engine), None)
            devices = device_checks(config, built, first, fresh, gpu_name) if built else []
        finally:
            for runner in runners.values():
                runner.deactivate()
    for item in devices:
        log(f"{item['status']:7s} {item['check']}: {item['detail']}")
    for error in errors:
        log(f"error   {error}")
    return {"checks": [asdict(c) for c in checks], "device_checks": devices, "latency": latency, "errors": errors}
