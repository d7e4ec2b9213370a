"""GPU check: what this project's GPU code does on a real GPU, always written as one JSON report.

    python -m experiments.gpu_check [--checkpoint model.pth | --onnx model.onnx] [-o gpu_check.json]
    python -m experiments.gpu_check --quick     # the prepared acceptance run: PyTorch only, a few minutes


- PyTorch (wherever torch sees CUDA, TensorRT or not): experiments.gpu_torch, the torch runner in FP32 (TF32
  off), FP16/bf16 autocast, channels_last and CUDA graphs against PyTorch FP32 on the CPU.
- TensorRT (where it can run): experiments.gpu_tensorrt, engines in FP32/FP16/INT8 built from the model, their
  parity with the same CPU reference and their latency, and device checks (the engine records its GPU and a
  copy claiming another is refused; a CUDA graph replayed on a new input equals the direct launch on it; two
  runners on two GPUs).
  Where TensorRT cannot run, the report says why.
- Without a model, a small PSPNet-18 is made here (random weights, a head whose logits vary like a trained
  one's). On a machine without a GPU: one line "no GPU: ..." and the report, exit 0.

Every part and precision is reported even when another fails (its error is its result). Exits 1 when a check
fails or nothing could be checked, so it doubles as an acceptance check."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click
import numpy as np

from experiments.gpu_config import GpuCheckConfig
from experiments.gpu_tensorrt import independent_gpu_name, run_tensorrt_check
from experiments.gpu_torch import (ERROR, FAILED, PASSED, VARIANTS, TorchTarget, cpu_reference, cuda_target,
                                   run_torch_check)
from export.scenes import draw_scene
from pspcore.cli import SIZE, Command, device_option, output_option
from pspcore.device import cuda_index
from pspcore.errors import InputError
from pspcore.files import atomic_output
from pspcore.model_info import ModelInfo
from pspcore.preprocess import prepare_frame

SMALL_SIZE = (257, 257)


def verdict(statuses: list[str]) -> bool:
    """True when something was checked and nothing failed or broke; a skipped check is neither."""
    return all(s not in (FAILED, ERROR) for s in statuses) and any(s == PASSED for s in statuses)


def check_inputs(info: ModelInfo, size: tuple[int, int], count: int, seed: int = 1000) -> np.ndarray:
    """Drawn street scenes of several aspect ratios, letterboxed like runtime frames (not the calibration
    set, so INT8 is judged on images it was not calibrated on)."""
    shapes = [(size[0], size[1]), (size[0] * 3 // 4, size[1]), (size[0], size[1] * 2 // 3)]
    frames = [draw_scene(*shapes[i % len(shapes)], seed=seed + i) for i in range(count)]
    return np.stack([prepare_frame(f, info, size)[0] for f in frames])


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


# ------------------------------------------------------------------------------------------- the report

def gpu_presence(config: GpuCheckConfig, target: TorchTarget | str | None) -> tuple[TorchTarget | None, str | None,
                                                                                      str | None]:
    """(torch target or None, why torch cannot use a GPU, why TensorRT cannot run)."""
    from runtime.backends.tensorrt import TensorRTRunner

    target = cuda_target(config.device) if target is None else target
    torch_reason = target if isinstance(target, str) else None
    trt_reason = TensorRTRunner.unavailable_reason() if config.tensorrt else "not checked (PyTorch only)"
    return (None if torch_reason else target), torch_reason, trt_reason


def run_gpu_check(config: GpuCheckConfig, log=print, target: TorchTarget | str | None = None,
                  report: dict | None = None) -> dict:
    """Everything the script reports, as a JSON-ready dict. `target`: where the PyTorch part runs (default:
    torch's CUDA device `config.device`; a test passes a stand-in). `report`: the dict to fill, part by part, so
    a caller that catches an exception still has every part gathered before it."""
    if config.checkpoint is not None and config.onnx is not None:
        raise InputError("give at most one of --checkpoint or --onnx")
    report = {} if report is None else report
    target, torch_reason, trt_reason = gpu_presence(config, target)
    report.update({"gpu": None, "torch": {"skipped": torch_reason}, "tensorrt": {"skipped": trt_reason},
                   "passed": False})
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
            statuses += torch_part(config, report, checkpoint, target, first, fresh, log)
        elif target is not None:
            report["torch"] = {"skipped": "the PyTorch checks need a checkpoint (--checkpoint, or no model for "
                                          "the small one)"}
        if trt_reason is None:
            statuses += tensorrt_part(config, report, work, checkpoint, onnx_path, info, size, first, fresh, log)
        else:
            log(f"skipped TensorRT: {trt_reason}")
    report["passed"] = verdict(statuses)
    return report


def torch_part(config: GpuCheckConfig, report: dict, checkpoint: Path, target: TorchTarget, first: np.ndarray,
               fresh: np.ndarray, log) -> list[str]:
    """The PyTorch checks into report["torch"]; their statuses (ERROR when the part itself broke)."""
    variants = [v for v in VARIANTS if config.torch_variants is None or v.name in config.torch_variants]
    try:
        torch_check = run_torch_check(checkpoint, target, first, fresh, batch=config.batch,
                                      duration_s=config.duration_s, matmul_n=config.matmul_n, variants=variants,
                                      min_iters=config.min_iters, log=log)
    except Exception as exc:
        report["torch"] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"error   torch: {report['torch']['error']}")
        return [ERROR]
    report["torch"] = torch_check.to_dict()
    return [c.status for c in torch_check.checks] + [ERROR for _ in torch_check.errors]


def tensorrt_part(config: GpuCheckConfig, report: dict, work: Path, checkpoint: Path | None, onnx_path: Path | None,
                  info: ModelInfo, size: tuple[int, int], first: np.ndarray, fresh: np.ndarray, log) -> list[str]:
    """The TensorRT checks into report["tensorrt"]; their statuses (ERROR when the part itself broke)."""
    try:
        if onnx_path is None:
            from export.onnx.exporter import export_checkpoint

            onnx_path = export_checkpoint(checkpoint, work / "model.onnx", size=size).path
        reference, (expected,) = cpu_expected(checkpoint, onnx_path, fresh)
        part = {"reference": reference, **run_tensorrt_check(config, onnx_path, info, first, fresh, expected,
                                                             report["gpu"], log=log)}
    except Exception as exc:
        report["tensorrt"] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"error   tensorrt: {report['tensorrt']['error']}")
        return [ERROR]
    report["tensorrt"] = part
    return ([c["status"] for c in part["checks"]] + [d["status"] for d in part["device_checks"]]
            + [ERROR for _ in part["errors"]])


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
@click.option("--quick", is_flag=True,
              help="The prepared GPU acceptance run (PyTorch only, a few minutes): the PyTorch checks at a small "
                   "size, TF32 semantics, a second GPU's CUDA graphs, recapture cost and the torch GPU tests.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the models and engines here [default: a temporary folder].")
@device_option("The GPU to check: cuda or cuda:N.", default="cuda")
@output_option("The JSON report (always written) [default: gpu_check.json].", default="gpu_check.json", dir_okay=False)
def main(checkpoint, onnx_path, calib_images, calib_list, precisions, size, batch, num_inputs, duration,
         cuda_graph, quick, workdir, device, output):
    """Check PyTorch on the GPU (and TensorRT where it runs): parity against FP32 on the CPU, and speed."""
    images = ()
    if calib_images or calib_list:
        from export.precision.calibration import find_calibration_images

        images = tuple(find_calibration_images(calib_images, calib_list))
    config = GpuCheckConfig(checkpoint=checkpoint, onnx=onnx_path, calib_images=images,
                            precisions=tuple(precisions) or ("fp32", "fp16", "int8"), size=size, batch=batch,
                            num_inputs=num_inputs, duration_s=duration, cuda_graph=cuda_graph, workdir=workdir,
                            device=cuda_index(device) or 0)
    report = {"passed": False}
    try:
        if quick:
            from experiments.gpu_quick import quick_config, run_quick

            run_quick(quick_config(config), log=click.echo, report=report)
        else:
            run_gpu_check(config, log=click.echo, report=report)
    except Exception as exc:
        report["passed"] = False
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
