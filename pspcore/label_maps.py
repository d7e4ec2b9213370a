"""The integer type of a label map (one class id per pixel), decided once: what psp-infer returns and writes as
PNG masks, what the Triton ensemble declares and returns, and what an exported model's `labels` output is."""
from __future__ import annotations

import numpy as np

from pspcore.errors import InputError

MAX_CLASSES = 65536  # 16-bit PNG masks and uint16 tensors hold class ids up to 65535


def label_dtype(num_classes: int) -> np.dtype:
    """uint8 for up to 256 classes, uint16 up to 65536; uint16 too when the count is unknown (0), which holds
    any class id a label map can carry."""
    if num_classes > MAX_CLASSES:
        raise InputError(f"{num_classes} classes: label maps hold at most {MAX_CLASSES}")
    return np.dtype(np.uint8 if 0 < num_classes <= 256 else np.uint16)


def as_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """`labels` in the label_dtype of `num_classes` (the same array when it already is)."""
    return np.asarray(labels).astype(label_dtype(num_classes), copy=False)


def graph_label_dtype(num_classes: int) -> np.dtype:
    """The type of a model's own `labels` output (the ONNX export's ArgMax then Cast): uint8 for up to 256
    classes, else int32, because TensorRT has no 16-bit integer tensors. The runtime turns what a model
    returns into label_dtype."""
    return np.dtype(np.uint8 if 0 < num_classes <= 256 else np.int32)
