"""The reference list-file format: one `image_path label_path` pair a line, relative to a data root
(absolute paths are kept as they are); blank lines and `#` comments are skipped."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from pspcore.errors import InputError
from pspcore.files import read_list_file


def read_list(list_path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> list[tuple[Path, Path]]:
    """The (image, label) pairs of a list file; every file must exist. `data_root` defaults to the list's folder."""
    pairs = read_list_file(list_path, data_root)
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        root = data_root if data_root is not None else Path(list_path).parent
        raise InputError(f"{list_path}: file not found: {missing[0]}{more} (paths are relative to {root})")
    return pairs


def read_image_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read image {path} (not an image OpenCV can decode)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: Path) -> np.ndarray:
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise InputError(f"cannot read label {path} (not an image OpenCV can decode)")
    if label.ndim != 2:
        raise InputError(f"label {path} has {label.shape[2]} channels; labels must be single-channel class "
                         "indices (255 = ignore), not colour images")
    if label.dtype != np.uint8:
        if label.max() > 255:
            raise InputError(f"label {path} holds values up to {int(label.max())}; at most 255 is supported")
        label = label.astype(np.uint8)
    return label


class ListFileSource:
    """`source[i]` -> (image RGB uint8 HxWx3, label uint8 HxW) read from a list file's pair i."""

    def __init__(self, list_path: str | os.PathLike, data_root: str | os.PathLike | None = None):
        self.pairs = read_list(list_path, data_root)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        image_path, label_path = self.pairs[index]
        return read_image_rgb(image_path), read_label(label_path)

    def describe(self, index: int) -> str:
        return f"{self.pairs[index][0]} / {self.pairs[index][1]}"
