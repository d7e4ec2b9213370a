"""The numeric precisions by name, one spelling for every layer: what ModelInfo.precision records, what a
runner computes in and what psp-build-engine converts to."""
from __future__ import annotations

FP32, FP16, BF16, INT8 = "fp32", "fp16", "bf16", "int8"
AUTOCAST = (FP16, BF16)  # the reduced float types a PyTorch runner's forward runs in (torch.autocast)
RUNNER_PRECISIONS = (FP32, *AUTOCAST)  # the PyTorch runner: weights stay FP32, autocast around the forward
ENGINE_PRECISIONS = (FP32, FP16, INT8)  # psp-build-engine: FP32 as it is, or converted to FP16 / Q/DQ INT8 first


def converted(precision: str) -> bool:
    """Whether a model of `precision` was converted from an FP32 one (every conversion starts from FP32)."""
    return precision != FP32
