"""What experiments.gpu_check is asked to check, below the modules that run the checks (gpu_check and
gpu_tensorrt both read it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    tensorrt: bool = True  # False: the PyTorch part only (--quick)
