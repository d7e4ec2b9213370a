"""Label maps to colours, the same for psp-infer's overlays and masks and psp-eval's saved predictions: the
model's palette, continued with the generic palette for every label past it (so no class is left black)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pspcore.model_info import generic_palette


def colour_table(palette: Sequence[Sequence[int]], num_classes: int = 0, bgr: bool = False) -> np.ndarray:
    """uint8 [K, 3] colour per label (RGB, or BGR for OpenCV), K covering every value a uint8 label map can
    hold and all `num_classes` classes."""
    size = max(256, num_classes, len(palette))
    colours = [tuple(c) for c in palette] + list(generic_palette(size)[len(palette):])
    table = np.asarray(colours, np.uint8)
    return np.ascontiguousarray(table[:, ::-1] if bgr else table)


def colorize(labels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Labels [H, W] -> colours [H, W, 3] from a colour_table (labels past it take its last colour)."""
    return np.take(table, labels, axis=0, mode="clip")
