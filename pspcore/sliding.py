"""Sliding-window inference with the convention of semseg's tool/test.py (scale_process), the one layout that
psp-eval --mode slide and psp-infer --tile share: an image smaller than the window is padded to it, half before
and half after (the odd pixel after), with the mean colour (0 once normalised); windows start every
ceil(2/3 window) and the last one ends flush with the edge; each window's softmax probabilities are summed
where windows overlap and divided by how many covered each pixel; the padding is cut off again."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STRIDE_RATE = 2 / 3


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def window_starts(length: int, window: int) -> list[int]:
    """Where windows start along one axis of `length` (>= window): semseg's grid of ceil((L - w) / stride) + 1
    windows at multiples of the stride, the last moved back to end at the edge."""
    stride = math.ceil(window * STRIDE_RATE)
    count = math.ceil((length - window) / stride) + 1
    return [min(i * stride, length - window) for i in range(count)]


@dataclass(frozen=True)
class SlidingWindows:
    """Windows of `window` (H, W) over an image of `size` (H, W) padded by `pad` (top, left) rows/columns
    before it (and whatever reaches `padded` after it); `origins` are the windows' (y, x) in the padded image."""

    size: tuple[int, int]
    window: tuple[int, int]
    pad: tuple[int, int]
    padded: tuple[int, int]
    origins: tuple[tuple[int, int], ...]

    @classmethod
    def over(cls, size: tuple[int, int], window: tuple[int, int]) -> "SlidingWindows":
        (h, w), (wh, ww) = size, window
        padded = (max(h, wh), max(w, ww))
        pad = ((padded[0] - h) // 2, (padded[1] - w) // 2)
        origins = tuple((y, x) for y in window_starts(padded[0], wh) for x in window_starts(padded[1], ww))
        return cls((h, w), (wh, ww), pad, padded, origins)

    def crops(self, chw: np.ndarray) -> np.ndarray:
        """A normalised image [C, H, W] -> its windows [K, C, h, w] (padding 0: the normalised mean)."""
        (top, left), (ph, pw), (h, w) = self.pad, self.padded, self.size
        if (ph, pw) != (h, w):
            chw = np.pad(chw, ((0, 0), (top, ph - h - top), (left, pw - w - left)))
        wh, ww = self.window
        return np.stack([chw[:, y:y + wh, x:x + ww] for y, x in self.origins]).astype(np.float32, copy=False)

    def merge(self, probabilities: np.ndarray) -> np.ndarray:
        """The windows' class probabilities [K, C, h, w] -> [C, H, W] over the image: averaged where windows
        overlap (every pixel is covered at least once), the padding dropped."""
        total = np.zeros((probabilities.shape[1], *self.padded), np.float32)
        count = np.zeros(self.padded, np.float32)
        wh, ww = self.window
        for (y, x), prob in zip(self.origins, probabilities):
            total[:, y:y + wh, x:x + ww] += prob
            count[y:y + wh, x:x + ww] += 1
        (top, left), (h, w) = self.pad, self.size
        return (total / count)[:, top:top + h, left:left + w]

    def merge_logits(self, logits: np.ndarray) -> np.ndarray:
        """merge() of the windows' logits [K, C, h, w], each turned into probabilities first."""
        return self.merge(softmax(logits.astype(np.float32, copy=False), axis=1))
