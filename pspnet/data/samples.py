"""Reading one (image, label) pair, the same way for list files and the named datasets: images as RGB with
OpenCV, labels as class indices with Pillow (which keeps a palette PNG's indices where OpenCV would expand
them to colours), and the sequence of pairs every training and evaluation source is."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pspcore.errors import InputError
from pspnet.data.transforms import IGNORE

_INDEX_MODES = ("P", "L", "1")  # 'P': palette PNGs (VOC); the indices are the classes, the palette only shows them
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I")  # 16/32-bit grey, as some converters write label PNGs


def read_image_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read image {path} (not an image OpenCV can decode)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: Path) -> np.ndarray:
    """A label file as uint8 class indices (HxW): grey or palette PNGs as they are, 16/32-bit grey when its
    values fit in 0..255. A colour image is an error: its colours are not classes."""
    try:
        with Image.open(path) as image:
            mode, label = image.mode, np.asarray(image)
    except OSError as exc:
        raise InputError(f"cannot read label {path} ({exc})") from None
    if mode in _INDEX_MODES:
        return np.ascontiguousarray(label, dtype=np.uint8)
    if mode in _WIDE_MODES:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise InputError(f"label {path} holds values {int(label.min())}..{int(label.max())}; "
                             "class indices must lie in 0..255 (255 = ignore)")
        return label.astype(np.uint8)
    raise InputError(f"label {path} is a colour image (Pillow mode {mode}); labels must be single-channel "
                     "class indices (255 = ignore), or palette PNGs")


def lookup_table(mapping: dict[int, int]) -> np.ndarray:
    """A 256-entry table raw value -> training id; every value not in `mapping` becomes IGNORE."""
    table = np.full(256, IGNORE, dtype=np.uint8)
    for raw, train_id in mapping.items():
        table[raw] = train_id
    return table


@dataclass(frozen=True)
class Sample:
    image: Path
    label: Path
    remap: np.ndarray | None = field(default=None, compare=False)  # lookup_table applied to the raw label


def check_files(samples: Sequence[Sample]) -> None:
    """Every image and label exists: checked once when a source opens rather than found mid-epoch."""
    problems = []
    for sample in samples:
        if not sample.image.is_file():
            problems.append(f"image {sample.image} not found (its label would be {sample.label})")
        elif not sample.label.is_file():
            problems.append(f"no label for image {sample.image}: expected {sample.label}")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(problems[0] + more)


class SampleSource(Sequence):
    """`source[i]` -> (image RGB uint8 HxWx3, label uint8 HxW, 255 = ignore) from a list of Samples."""

    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.samples[index]
        label = read_label(sample.label)
        if sample.remap is not None:
            label = sample.remap[label]
        return read_image_rgb(sample.image), label

    def describe(self, index: int) -> str:
        return f"{self.samples[index].image} / {self.samples[index].label}"

    @property
    def image_paths(self) -> list[Path]:
        return [sample.image for sample in self.samples]
