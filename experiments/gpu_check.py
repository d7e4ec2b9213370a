"""GPU check: what this project's GPU code does on a real GPU, always written as one JSON report.

    python -m experiments.gpu_check [--checkpoint model.pth | --onnx model.onnx] [-o gpu_check.json]

- PyTorch (wherever torch sees CUDA, TensorRT or not): experiments.gpu_torch, the torch runner in FP32 (TF32
  off), FP16/bf16 autocast, channels_last and CUDA graphs against PyTorch FP32 on the CPU.
- TensorRT (where it can run): engines in FP32/FP16/INT8 built from the model, their parity with the same CPU
  reference and their latency, and device checks (the engine records its GPU and a copy claiming another is
  refused; a CUDA graph replayed on a new input equals the direct launch on it; two runners on two GPUs).
  Where TensorRT cannot run, the report says why.
- Without a model, a small PSPNet-18 is made here (random weights, a head whose logits vary like a trained
  one's). On a machine without a GPU: one line "no GPU: ..." and the report, exit 0.

Every part and precision is reported even when another fails (its error is its result). Exits 1 when a check
fails or nothing could be checked, so it doubles as an acceptance check."""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import click
import numpy as np

from experiments.gpu_torch import (ERROR, FAILED, PASSED, REPLAY_TARGET, SKIPPED, TARGETS, VARIANTS, TorchTarget,
                                   cpu_reference, cuda_target, measure_latency, passes, run_torch_check)
from export.parity import compare_outputs
from export.scenes import draw_scene, write_scenes
from pspcore.cli import SIZE, Command, device_option, output_option
from pspcore.device import cuda_index
from pspcore.errors import InputError
from pspcore.files import atomic_output
from pspcore.model_info import ModelInfo
from pspcore.preprocess import prepare_frame

SMALL_SIZE = (257, 257)


@dataclass(frozen=True)
class GpuCheckConfig:
    checkpoint: Path | None = None
    onnx: Path | None = None
    arch: str = "pspnet18"  # the small model made when neither checkpoint nor ONNX model is given
    num_classes: int = 5
    calib_images: tuple[Path, ...] = ()
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")  # TensorRT engines
    size: tuple[int, int] | None = None
    batch: int = 1
    num_inputs: int = 8
    num_calib: int = 64
    duration_s: float = 3.0
    cuda_graph: bool = False  # TensorRT engines replayed as CUDA graphs in the parity/latency runs
    workdir: Path | None = None
    device: int = 0
    matmul_n: int = 8192
    min_iters: int = 10  # latency samples per runner, at least
    torch_variants: tuple[str, ...] | None = None  # names from experiments.gpu_torch.VARIANTS (None: all)


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


def verdict(statuses: list[str]) -> bool:
    """True when something was checked and nothing failed or broke; a skipped check is neither."""
    return all(s not in (FAILED, ERROR) for s in statuses) and any(s == PASSED for s in statuses)


def device_check(name: str, status: str, detail: str) -> dict:
    return {"check": name, "status": status, "detail": detail}


def check_inputs(info: ModelInfo, size: tuple[int, int], count: int, seed: int = 1000) -> np.ndarray:
    """Drawn street scenes of several aspect ratios, letterboxed like runtime frames (not the calibration
    set, so INT8 is judged on images it was not calibrated on)."""
    shapes = [(size[0], size[1]), (size[0] * 3 // 4, size[1]), (size[0], size[1] * 2 // 3)]
    frames = [draw_scene(*shapes[i % len(shapes)], seed=seed + i) for i in range(count)]
    return np.stack([prepare_frame(f, info, size)[0] for f in frames])


def drawn_calibration(folder: Path, size: tuple[int, int], count: int = 16) -> list[Path]:
    """Drawn scenes to calibrate on when the user gives no images (a smoke check, not an accuracy check)."""
    return write_scenes(folder, [tuple(size)] * count)


def small_model(path: Path, arch: str, num_classes: int, size: tuple[int, int], seed: int = 0) -> Path:
    """A PSPNet with random weights whose last conv projects the head's features on the directions in which
    they vary most from one drawn scene to another: logits that depend on the image like a trained model's,
    so neither near-ties nor a stale result can pass the checks. Saved as a checkpoint at `path`."""
    import torch

    from pspnet.checkpoint import info_for_config, save_checkpoint
    from pspnet.factory import create_model

    torch.manual_seed(seed)
    # Default BN (identity statistics): random running statistics make a random network's output depend on
    # the pixel position far more than on the image.
    model = create_model(arch, num_classes, aux=False).eval()
    info = info_for_config(model.config).with_(input_size=tuple(size))
    features = []
    hook = model.cls[4].register_forward_hook(lambda module, inputs, output: features.append(inputs[0]))
    with torch.no_grad():
        model(torch.from_numpy(check_inputs(info, size, 4, seed=500)))
    hook.remove()
    found = features[0]
    across_scenes = (found - found.mean(0, keepdim=True)).permute(0, 2, 3, 1).reshape(-1, found.shape[1])
    _, singular, directions = torch.linalg.svd(across_scenes, full_matrices=False)
    weight = directions[:num_classes] / singular[:num_classes, None] * len(across_scenes) ** 0.5
    mean = found.permute(0, 2, 3, 1).reshape(-1, found.shape[1]).mean(0)
    with torch.no_grad():
        model.cls[4].weight.copy_(weight[:, :, None, None])
        model.cls[4].bias.copy_(-(weight @ mean))
    return save_checkpoint(path, model, info)


def model_source(config: GpuCheckConfig, work: Path) -> tuple[Path | None, Path | None, ModelInfo]:
    """(checkpoint or None, ONNX model or None (exported later, when TensorRT needs it), ModelInfo)."""
    if config.onnx is not None:
        from pspcore.model_info import read_onnx_info

        return None, config.onnx, read_onnx_info(config.onnx)
    checkpoint = config.checkpoint or small_model(work / f"small-{config.arch}.pth", config.arch,
                                                  config.num_classes, config.size or SMALL_SIZE)
    from pspnet.checkpoint import load_model

    return checkpoint, None, load_model(checkpoint)[1]


def cpu_expected(checkpoint: Path | None, onnx: Path | None, *batches: np.ndarray) -> tuple[str, list]:
    """The expected outputs, computed on the CPU in FP32: PyTorch for a checkpoint, else ONNX Runtime."""
    if checkpoint is not None:
        return "PyTorch FP32 on the CPU", cpu_reference(checkpoint, *batches)
    from runtime.backends.onnxruntime import OnnxRuntimeRunner

    with OnnxRuntimeRunner(onnx, providers="cpu") as runner:
        return "ONNX Runtime FP32 on the CPU", [runner.infer(b) for b in batches]


# ---------------------------------------------------------------------------------------------- TensorRT

def build_engine_for(config: GpuCheckConfig, precision: str, onnx_path: Path, work: Path):
    """Build one engine (converting the FP32 model first); (engine path, build seconds, notes)."""
    from export.engine import build_engine

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
    runner = TensorRTRunner(engine, device=config.device, cuda_graph=config.cuda_graph)
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
    """What only a GPU machine shows of the runner's device handling. `gpu_name`: this GPU's name from an
    independent source (None: that check is skipped)."""
    from pspcore.engine_file import read_sidecar, sidecar_path
    from pspcore.errors import InputError as Refused
    from runtime.backends.tensorrt import TensorRTRunner

    built = read_sidecar(engine).platform
    if gpu_name is None:
        results = [device_check("engine records the GPU it was built on", SKIPPED,
                                "no independent source of the GPU name (torch or nvidia-smi)")]
    else:
        results = [device_check("engine records the GPU it was built on",
                                PASSED if built.gpu_name == gpu_name else FAILED,
                                f"sidecar: {built.gpu_name}; this GPU: {gpu_name}")]
    with tempfile.TemporaryDirectory(prefix="psp-elsewhere-") as tmp:
        copy = Path(tmp) / engine.name
        shutil.copy(engine, copy)
        data = json.loads(sidecar_path(engine).read_text())
        sidecar_path(copy).write_text(json.dumps({**data, "gpu_name": "NVIDIA Imaginary 9000"}))
        try:
            TensorRTRunner(copy, device=config.device).activate()
            refused = "loaded it"
        except Refused as exc:
            refused = None if "rebuild it here" in str(exc) else f"refused for another reason: {exc}"
    results.append(device_check("an engine whose sidecar names another GPU is refused",
                                PASSED if refused is None else FAILED, refused or "refused with the rebuild advice"))
    results.append(graph_replay_check(config, engine, first, fresh))
    return results + [two_gpu_check(config, engine, fresh)]


def graph_replay_check(config: GpuCheckConfig, engine: Path, first: np.ndarray, fresh: np.ndarray) -> dict:
    """The graph captured on `first` and replayed on `fresh` must equal the direct launch on `fresh`."""
    from runtime.backends.tensorrt import TensorRTRunner

    name = "CUDA graph replayed on a new input equals the direct launch on it"
    with TensorRTRunner(engine, device=config.device) as plain:
        expected = plain.infer(fresh)
    with TensorRTRunner(engine, device=config.device, cuda_graph=True) as graph:
        graph.infer(first)
        got = graph.infer(fresh)
        replays, notes = graph.graph_launches, "; ".join(graph.notes)
    if replays < 2:
        return device_check(name, FAILED, notes or f"the graph was launched {replays} time(s), not replayed")
    report = compare_outputs(expected, got)
    return device_check(name, PASSED if report.ok(*REPLAY_TARGET) else FAILED, report.describe())


def two_gpu_check(config: GpuCheckConfig, engine: Path, batch: np.ndarray) -> dict:
    from pspcore.engine_file import current_platform
    from pspcore.nvidia import cuda_check, import_cudart
    from runtime.backends.tensorrt import TensorRTRunner

    name = "two runners on two GPUs in one thread"
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
        checks, runners = [], {}
        try:
            for precision in config.precisions:
                try:
                    check, runners[precision] = check_precision(config, precision, onnx_path, work, fresh, expected)
                except Exception as exc:  # one precision failing must not hide the others
                    check = PrecisionCheck(precision, ERROR, f"{type(exc).__name__}: {exc}")
                checks.append(check)
                log(check.line())
            latency = (measure_latency({f"tensorrt {p}": r for p, r in runners.items()}, first[:config.batch],
                                       config.duration_s, min_iters=config.min_iters) if runners else None)
            built = next((Path(c.engine) for c in checks if c.engine), None)
            devices = device_checks(config, built, first, fresh, gpu_name) if built else []
        finally:
            for runner in runners.values():
                runner.deactivate()
    for item in devices:
        log(f"{item['status']:7s} {item['check']}: {item['detail']}")
    return {"checks": [asdict(c) for c in checks], "device_checks": devices, "latency": latency}


# ------------------------------------------------------------------------------------------- the report

def gpu_presence(config: GpuCheckConfig, target: TorchTarget | str | None) -> tuple[TorchTarget | None, str | None,
                                                                                      str | None]:
    """(torch target or None, why torch cannot use a GPU, why TensorRT cannot run)."""
    from runtime.backends.tensorrt import TensorRTRunner

    target = cuda_target(config.device) if target is None else target
    torch_reason = target if isinstance(target, str) else None
    return (None if torch_reason else target), torch_reason, TensorRTRunner.unavailable_reason()


def run_gpu_check(config: GpuCheckConfig, log=print, target: TorchTarget | str | None = None) -> dict:
    """Everything the script reports, as a JSON-ready dict. `target`: where the PyTorch part runs (default:
    torch's CUDA device `config.device`; a test passes a stand-in)."""
    if config.checkpoint is not None and config.onnx is not None:
        raise InputError("give at most one of --checkpoint or --onnx")
    target, torch_reason, trt_reason = gpu_presence(config, target)
    report = {"gpu": None, "torch": {"skipped": torch_reason}, "tensorrt": {"skipped": trt_reason}, "passed": False}
    if target is None and trt_reason is not None:
        report["no_gpu"] = f"{torch_reason}; TensorRT: {trt_reason}"
        log(f"no GPU: {report['no_gpu']}")
        report["passed"] = None
        return report
    statuses = []
    with tempfile.TemporaryDirectory(prefix="psp-gpu-model-") as tmp:
        work = Path(config.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        checkpoint, onnx_path, info = model_source(config, work)
        size = config.size or info.input_size or SMALL_SIZE
        first = check_inputs(info, size, config.num_inputs, seed=1000)
        fresh = check_inputs(info, size, config.num_inputs, seed=2000)  # replays must see new inputs
        report["model"] = {"checkpoint": str(checkpoint) if checkpoint else None, "onnx": str(onnx_path or ""),
                           "arch": info.arch, "size": list(size), "inputs": config.num_inputs}
        report["gpu"] = target.name if target else independent_gpu_name(config.device)
        if target is not None and checkpoint is not None:
            variants = [v for v in VARIANTS if config.torch_variants is None or v.name in config.torch_variants]
            torch_check = run_torch_check(checkpoint, target, first, fresh, batch=config.batch,
                                          duration_s=config.duration_s, matmul_n=config.matmul_n,
                                          variants=variants, min_iters=config.min_iters, log=log)
            report["torch"] = torch_check.to_dict()
            statuses += [c.status for c in torch_check.checks]
        elif target is not None:
            report["torch"] = {"skipped": "the PyTorch checks need a checkpoint (--checkpoint, or no model for "
                                          "the small one)"}
        if trt_reason is None:
            if onnx_path is None:
                from export.onnx import export_checkpoint

                onnx_path = export_checkpoint(checkpoint, work / "model.onnx", size=size).path
            reference, (expected,) = cpu_expected(checkpoint, onnx_path, fresh)
            report["tensorrt"] = {"reference": reference, **run_tensorrt_check(
                config, onnx_path, info, first, fresh, expected, report["gpu"], log=log)}
            statuses += [c["status"] for c in report["tensorrt"]["checks"]]
            statuses += [d["status"] for d in report["tensorrt"]["device_checks"]]
        else:
            log(f"skipped TensorRT: {trt_reason}")
    report["passed"] = verdict(statuses)
    return report


def write_report(report: dict, path: str | Path) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="PyTorch checkpoint [default: a small PSPNet-18 made here].")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, path_type=Path),
              help="FP32 ONNX model instead (TensorRT only; reference: ONNX Runtime FP32 on the CPU).")
@click.option("--calib-images", type=click.Path(file_okay=False), help="INT8 calibration images (folder).")
@click.option("--calib-list", type=click.Path(dir_okay=False), help="INT8 calibration images (list file).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16", "int8"]),
              help="TensorRT precisions to check (repeatable) [default: all three].")
@click.option("--size", type=SIZE, default=None, help="Input size HxW [default: the model's].")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True, help="Batch for latency.")
@click.option("--inputs", "num_inputs", type=click.IntRange(min=1), default=8, show_default=True,
              help="Drawn scenes per parity check.")
@click.option("--duration", type=click.FloatRange(min=0.01), default=3.0, show_default=True,
              help="Seconds of latency samples per runner.")
@click.option("--cuda-graph", is_flag=True, help="Replay the TensorRT engines as CUDA graphs.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the models and engines here [default: a temporary folder].")
@device_option("The GPU to check: cuda or cuda:N.", default="cuda")
@output_option("The JSON report (always written) [default: gpu_check.json].", default="gpu_check.json", dir_okay=False)
def main(checkpoint, onnx_path, calib_images, calib_list, precisions, size, batch, num_inputs, duration,
         cuda_graph, workdir, device, output):
    """Check PyTorch on the GPU (and TensorRT where it runs): parity against FP32 on the CPU, and speed."""
    images = ()
    if calib_images or calib_list:
        from export.calibration import find_calibration_images

        images = tuple(find_calibration_images(calib_images, calib_list))
    config = GpuCheckConfig(checkpoint=checkpoint, onnx=onnx_path, calib_images=images,
                            precisions=tuple(precisions) or ("fp32", "fp16", "int8"), size=size, batch=batch,
                            num_inputs=num_inputs, duration_s=duration, cuda_graph=cuda_graph, workdir=workdir,
                            device=cuda_index(device) or 0)
    report = {"passed": False, "error": "the check stopped before its end"}
    try:
        report = run_gpu_check(config, log=click.echo)
    except Exception as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        write_report(report, output)
        if "no_gpu" not in report:  # without a GPU the one line says it all
            click.echo(f"wrote {output}", err=True)
    if report["passed"] is False:
        raise click.exceptions.Exit(1)


if __name__ == "__main__":
    main()
