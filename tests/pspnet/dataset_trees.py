"""Tiny trees in each public dataset's download layout, labels written in that dataset's real format (a
palette PNG for VOC, 0..150 for ADE20K, labelIds for Cityscapes); shared by the reader, CLI and export tests."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SIZES = [(12, 16), (20, 9), (7, 7)]  # (height, width): different per image, as in the real datasets


def vocbit_palette(n: int) -> list[tuple[int, int, int]]:
    """VOC's devkit colormap (bitget), written out independently of the module under test."""
    def bit(value: int, index: int) -> int:
        return (value >> index) & 1

    colours = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= bit(c, 0) << (7 - j)
            g |= bit(c, 1) << (7 - j)
            b |= bit(c, 2) << (7 - j)
            c >>= 3
        colours.append((r, g, b))
    return colours


def write_image(path: Path, height: int, width: int, rgb=(200, 30, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = rgb[::-1]  # OpenCV writes BGR
    assert cv2.imwrite(str(path), image)


def write_png(path: Path, label: np.ndarray, palette: list[tuple[int, int, int]] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(label)
    if palette is not None:
        image.putpalette([v for colour in palette for v in colour])  # 'L' -> 'P'
    image.save(path)


def random_label(rng, size: tuple[int, int], high: int) -> np.ndarray:
    return rng.integers(0, high, size=size, dtype=np.uint8)


def make_voc(base: Path, splits: dict[str, list[str]], aug: dict[str, np.ndarray] | None = None) -> tuple[Path, dict]:
    """A VOCdevkit/VOC2012 tree; returns (the VOC2012 folder, id -> label written)."""
    root, rng, labels = base / "VOCdevkit" / "VOC2012", np.random.default_rng(0), {}
    ids = sorted({i for members in splits.values() for i in members})
    for n, image_id in enumerate(ids):
        size = SIZES[n % len(SIZES)]
        write_image(root / "JPEGImages" / f"{image_id}.jpg", *size)
        label = random_label(rng, size, 21)
        label[0, :] = 255  # object borders are 255 in VOC
        labels[image_id] = label
        write_png(root / "SegmentationClass" / f"{image_id}.png", label, vocbit_palette(256))
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for split, members in splits.items():
        (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i in members))
    for image_id, label in (aug or {}).items():
        if not (root / "JPEGImages" / f"{image_id}.jpg").exists():
            write_image(root / "JPEGImages" / f"{image_id}.jpg", *label.shape)
        write_png(root / "SegmentationClassAug" / f"{image_id}.png", label)  # SBD: plain grey PNGs
    return root, labels


VOC_SPLITS = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"],
              "trainval": ["2007_000032", "2007_000033", "2007_000039"]}


def make_ade20k(base: Path) -> tuple[Path, dict]:
    root, rng, labels = base / "ADEChallengeData2016", np.random.default_rng(3), {}
    for folder, prefix, count in [("training", "ADE_train", 3), ("validation", "ADE_val", 2)]:
        for n in range(1, count + 1):
            name, size = f"{prefix}_{n:08d}", SIZES[n % len(SIZES)]
            write_image(root / "images" / folder / f"{name}.jpg", *size)
            label = random_label(rng, size, 151)
            label[0, :3] = (0, 1, 150)  # 'other', the first and the last class
            labels[name] = label
            write_png(root / "annotations" / folder / f"{name}.png", label)
    return root, labels


# cityscapesScripts labels.py, every row (id -> trainId); 255 = not evaluated.
CITYSCAPES_TRAIN_ID = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255, 7: 0, 8: 1, 9: 255, 10: 255, 11: 2, 12: 3, 13: 4,
    14: 255, 15: 255, 16: 255, 17: 5, 18: 255, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 29: 255, 30: 255, 31: 16, 32: 17, 33: 18,
}


def make_cityscapes(base: Path) -> tuple[Path, dict]:
    root, rng, labels = base / "cityscapes", np.random.default_rng(4), {}
    frames = [("train", "aachen", "aachen_000000_000019"), ("train", "bochum", "bochum_000000_000313"),
              ("val", "frankfurt", "frankfurt_000000_000294")]
    for n, (split, city, frame) in enumerate(frames):
        size = SIZES[n % len(SIZES)]
        write_image(root / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png", *size)
        label = random_label(rng, size, 34)
        label[0, :3] = (0, 7, 33)
        label[1, :1] = 255  # license plate (id -1) as a uint8 PNG stores it
        labels[frame] = label
        write_png(root / "gtFine" / split / city / f"{frame}_gtFine_labelIds.png", label)
    return root, labels
