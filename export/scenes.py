"""Test inputs that need no download: street-like scenes drawn with OpenCV (sky, buildings, road, a car, a
tree), written as image files or preprocessed like runtime frames, for the export checks and the
calibration/verification of FP16/INT8 conversions."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from pspcore.errors import InputError
from pspcore.model_info import ModelInfo
from pspcore.preprocess import prepare_frame


def draw_scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A street-like BGR uint8 picture (sky, buildings with windows, road, a car, a tree) drawn with OpenCV:
    real-image statistics - flat regions, edges, texture - without shipping a photo."""
    rng = np.random.default_rng(seed)
    h, w = height, width
    img = np.zeros((h, w, 3), np.uint8)
    sky = np.linspace(235, 150, h // 2 + 1, dtype=np.float32)[:, None]
    img[: h // 2 + 1] = np.stack([sky + 10, sky - 20, sky * 0.5], -1).clip(0, 255).astype(np.uint8)
    horizon = int(h * 0.55)
    for x0 in range(0, w, max(4, w // 6)):
        top = int(rng.uniform(0.1, 0.4) * h)
        colour = tuple(int(c) for c in rng.integers(60, 200, 3))
        cv2.rectangle(img, (x0, top), (x0 + w // 6, horizon), colour, -1)
        for wy in range(top + 4, horizon - 4, max(3, h // 20)):
            cv2.line(img, (x0 + 3, wy), (x0 + w // 6 - 3, wy), (40, 60, 90), max(1, h // 100))
    cv2.rectangle(img, (0, horizon), (w, h), (90, 90, 95), -1)  # road
    cv2.line(img, (w // 2, h), (w // 2, horizon), (240, 240, 240), max(1, w // 80))
    cv2.rectangle(img, (w // 5, int(h * 0.7)), (w // 5 + w // 4, int(h * 0.85)), (30, 30, 200), -1)  # car
    cv2.circle(img, (int(w * 0.85), int(h * 0.45)), max(2, h // 8), (40, 140, 40), -1)  # tree crown
    noise = rng.normal(0, 6, img.shape)
    return cv2.GaussianBlur((img + noise).clip(0, 255).astype(np.uint8), (3, 3), 0)


def write_scenes(folder: str | os.PathLike, sizes: list[tuple[int, int]], seed: int = 0) -> list[Path]:
    """One drawn scene per (H, W) in `sizes`, as PNG files in `folder` (sorted by name in that order): images to
    calibrate or verify on that need no download."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"scene_{i:03d}.png" for i in range(len(sizes))]
    for i, (path, (h, w)) in enumerate(zip(paths, sizes)):
        if not cv2.imwrite(str(path), draw_scene(h, w, seed=seed + i)):
            raise InputError(f"cannot write {path}")
    return paths


def sample_batch(info: ModelInfo, size: tuple[int, int], batch: int, seed: int = 0) -> np.ndarray:
    """float32 [batch, 3, H, W]: alternately a drawn scene preprocessed like a real frame (pspcore.preprocess,
    so letterboxing and the model's mean/std are exercised) and standard-normal noise."""
    rng = np.random.default_rng(seed)
    h, w = size
    images = []
    for i in range(batch):
        if i % 2 == 0:
            frame = draw_scene(int(h * 0.9) + 1, w, seed + i)  # letterboxed: pads the bottom rows
            images.append(prepare_frame(frame, info, size)[0])
        else:
            images.append(rng.standard_normal((3, h, w)).astype(np.float32))
    return np.stack(images)
