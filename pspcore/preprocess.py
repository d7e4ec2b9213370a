"""Frames to network input, the same way everywhere (runtime, evaluation, INT8 calibration): BGR -> RGB,
resize keeping the aspect ratio, pad with the mean colour, normalise with the model's mean/std."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pspcore.model_info import ModelInfo
from pspcore.sliding import SlidingWindows


def normalize(image_rgb: np.ndarray, mean, std) -> np.ndarray:
    """HxWx3 RGB (uint8 or float, 0..255) -> 3xHxW float32 (x - mean) / std."""
    mean = np.asarray(mean, np.float32)
    inv_std = 1.0 / np.asarray(std, np.float32)
    out = (image_rgb.astype(np.float32) - mean) * inv_std
    return np.ascontiguousarray(out.transpose(2, 0, 1))


@dataclass(frozen=True)
class Letterbox:
    """How a frame was placed in the network input: scaled by `scale`, then padded right/bottom."""

    frame_size: tuple[int, int]  # (H, W) of the original frame
    input_size: tuple[int, int]  # (H, W) of the network input
    resized: tuple[int, int]  # (H, W) of the frame after scaling, before padding

    def crop(self, array: np.ndarray) -> np.ndarray:
        """The part of a [..., H, W] network-resolution array that covers the frame (drops the padding)."""
        return array[..., : self.resized[0], : self.resized[1]]


def letterbox(image: np.ndarray, input_size: tuple[int, int], pad_value) -> tuple[np.ndarray, Letterbox]:
    """Scale `image` (HxWx3) to fit `input_size` with its aspect ratio kept, pad bottom/right with pad_value."""
    h, w = image.shape[:2]
    ih, iw = input_size
    scale = min(ih / h, iw / w)
    rh, rw = max(1, min(ih, round(h * scale))), max(1, min(iw, round(w * scale)))
    if (rh, rw) != (h, w):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (rw, rh), interpolation=interp)
    if (rh, rw) != (ih, iw):
        image = cv2.copyMakeBorder(image, 0, ih - rh, 0, iw - rw, cv2.BORDER_CONSTANT,
                                   value=tuple(float(v) for v in pad_value))
    return image, Letterbox((h, w), (ih, iw), (rh, rw))


def prepare_rgb(image_rgb: np.ndarray, info: ModelInfo, input_size: tuple[int, int]):
    """One RGB image -> (3xHxW float32 network input, Letterbox). The Triton ensemble's preprocess step
    calls this too, so a served model sees exactly what psp-infer feeds a local one."""
    # Pad with the mean colour, which normalises to 0: what the reference training pads crops with.
    boxed, box = letterbox(image_rgb, input_size, info.mean)
    return normalize(boxed, info.mean, info.std), box


def prepare_frame(frame_bgr: np.ndarray, info: ModelInfo, input_size: tuple[int, int]):
    """One BGR frame -> (3xHxW float32 network input, Letterbox to map the output back)."""
    return prepare_rgb(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB), info, input_size)


def prepare_batch(frames_bgr: list[np.ndarray], info: ModelInfo, input_size: tuple[int, int]):
    """Several BGR frames (any sizes) -> (float32 [N, 3, H, W] batch, one Letterbox per frame)."""
    prepared = [prepare_frame(f, info, input_size) for f in frames_bgr]
    return np.stack([p[0] for p in prepared]), [p[1] for p in prepared]


def tile_frame(frame_bgr: np.ndarray, info: ModelInfo, window: tuple[int, int]):
    """Sliding-window input for a frame larger than the model input, laid out by pspcore.sliding (the
    reference's evaluation, as psp-eval --mode slide): -> (float32 [K, 3, h, w] windows, SlidingWindows)."""
    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    windows = SlidingWindows.over(rgb.shape[:2], window)
    return windows.crops(normalize(rgb, info.mean, info.std)), windows
