"""Network output back to the frame: argmax (or the model's own labels), letterbox padding cropped, resized to
the frame with nearest neighbour, coloured with the model's palette, blended over the frame, counted, and
run-length encoded for the JSON lines."""
from __future__ import annotations

import cv2
import numpy as np

from pspcore.label_maps import as_labels
from pspcore.colours import colour_table
from pspcore.model_info import ModelInfo
from pspcore.preprocess import Letterbox
from pspcore.sliding import SlidingWindows


def to_labels(output: np.ndarray, num_classes: int = 0) -> np.ndarray:
    """logits [N, C, H, W] -> labels [N, H, W]; a labels output [N, H, W] of a model with `num_classes`
    classes (0: unknown) as is. Both in pspcore.label_maps' type."""
    if output.ndim == 3:
        return as_labels(output, num_classes)
    if output.ndim != 4:
        raise ValueError(f"expected logits [N, C, H, W] or labels [N, H, W], got shape {output.shape}")
    return as_labels(output.argmax(axis=1), output.shape[1])


def _resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if labels.shape == tuple(size):
        return labels
    # OpenCV resizes 8/16-bit integers exactly with nearest neighbour; wider labels go through uint16.
    source = labels if labels.dtype in (np.uint8, np.uint16) else labels.astype(np.uint16)
    out = cv2.resize(source, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return out.astype(labels.dtype, copy=False)


def labels_to_frame(labels: np.ndarray, box: Letterbox) -> np.ndarray:
    """Labels [H, W] at network resolution -> labels at the frame's size, padding dropped."""
    return _resize_labels(np.ascontiguousarray(box.crop(labels)), box.frame_size)


def merge_tiles(logits: np.ndarray, windows: SlidingWindows) -> np.ndarray:
    """Sliding-window logits [K, C, h, w] -> labels at the frame's size (pspcore.sliding's merge, argmax)."""
    return to_labels(windows.merge_logits(logits)[None])[0]


def palette_lut(info: ModelInfo) -> np.ndarray:
    """The model's BGR colour table indexed by label (pspcore.colours, as psp-eval colours its predictions)."""
    return colour_table(info.palette, info.num_classes, bgr=True)


def overlay(frame_bgr: np.ndarray, colour_bgr: np.ndarray, opacity: float) -> np.ndarray:
    """The colour mask blended over the frame: 0 shows the frame only, 1 the mask only."""
    return cv2.addWeighted(frame_bgr, 1.0 - opacity, colour_bgr, opacity, 0.0)


def class_fractions(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """The fraction of pixels per class, length max(num_classes, largest label + 1)."""
    counts = np.bincount(labels.ravel(), minlength=num_classes)
    return counts / max(1, labels.size)


def rle_encode(labels: np.ndarray) -> dict:
    """A label map as run-length encoding over its row-major pixels: {"size": [H, W], "values": [...],
    "counts": [...]}, run i being counts[i] pixels of class values[i]. Compact for segmentation masks, plain JSON."""
    flat = np.ascontiguousarray(labels).ravel()
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1)) if flat.size else np.zeros(0, int)
    counts = np.diff(np.concatenate((starts, [flat.size])))
    return {"size": [int(labels.shape[0]), int(labels.shape[1])], "values": flat[starts].tolist(),
            "counts": counts.tolist()}


def rle_decode(rle: dict, dtype=np.int64) -> np.ndarray:
    """The label map `rle_encode` encoded."""
    h, w = rle["size"]
    flat = np.repeat(np.asarray(rle["values"], dtype), np.asarray(rle["counts"], np.int64))
    if flat.size != h * w:
        raise ValueError(f"run-length encoding covers {flat.size} pixels, its size says {h}x{w}")
    return flat.reshape(h, w)
