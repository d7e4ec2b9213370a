"""INT8 calibration images: found in a folder, a list file or a named dataset (VOC, ADE20K, Cityscapes),
read and preprocessed exactly as the runtime prepares frames (pspcore.preprocess.prepare_frame at the
model's input size)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pspcore.errors import InputError
from pspcore.files import list_images, read_list_file
from pspcore.model_info import ModelInfo
from pspcore.preprocess import prepare_frame

DEFAULT_NUM_IMAGES = 64


def find_calibration_images(images_dir: str | os.PathLike | None = None, list_file: str | os.PathLike | None = None,
                            data_root: str | os.PathLike | None = None, dataset: str | None = None,
                            split: str = "train") -> list[Path]:
    """The calibration image paths from exactly one source: a folder (searched recursively), a list file, or
    a named dataset's split (voc, ade20k, cityscapes unpacked at `data_root`; its labels are not needed)."""
    if sum(source is not None for source in (images_dir, list_file, dataset)) != 1:
        raise InputError("give calibration images as exactly one of --calib-images DIR, --calib-list FILE or "
                         "--calib-dataset NAME --data-root ROOT")
    if images_dir is not None:
        if not Path(images_dir).is_dir():
            raise InputError(f"calibration image folder not found: {images_dir}")
        return list_images(images_dir, recursive=True, what="calibration image")
    if dataset is not None:
        from pspnet.data.datasets import open_dataset

        if data_root is None:
            raise InputError(f"--calib-dataset {dataset} needs --data-root, the folder it was unpacked to")
        return open_dataset(dataset, data_root, split).image_paths
    # The first column of each line: the training list format, labels optional.
    rows = read_list_file(list_file, data_root, fields=(1, 2), what="calibration list")
    return [row[0] for row in rows]


def spread(items: list, count: int | None) -> list:
    """`count` items spread evenly over `items` (all when count is None or larger): a calibration subset
    that covers the whole set, not just its first scenes."""
    if count is None or count >= len(items):
        return list(items)
    if count < 1:
        raise InputError(f"the number of calibration images must be at least 1, got {count}")
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


@dataclass
class CalibrationSet:
    """Preprocessed images [N, 3, H, W] float32, the files used, and those skipped with the reason."""

    batch: np.ndarray
    used: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def load_calibration_set(paths: list[str | os.PathLike], info: ModelInfo, input_size: tuple[int, int],
                         num_images: int | None = DEFAULT_NUM_IMAGES, progress: bool = True) -> CalibrationSet:
    """Read up to `num_images` of `paths` (spread over the set) and prepare them like runtime frames.
    Unreadable files are skipped and reported; none readable is an InputError."""
    from tqdm import tqdm

    chosen = spread([Path(p) for p in paths], num_images)
    if not chosen:
        raise InputError("no calibration images given")
    arrays, used, skipped = [], [], []
    for path in tqdm(chosen, desc="calibration images", unit="img", disable=not progress, leave=False):
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        if frame is None:
            skipped.append((path, "missing" if not path.exists() else "not an image OpenCV can decode"))
            continue
        arrays.append(prepare_frame(frame, info, input_size)[0])
        used.append(path)
    if not arrays:
        first, reason = skipped[0]
        raise InputError(f"none of the {len(chosen)} calibration images could be read (e.g. {first}: {reason})")
    return CalibrationSet(np.stack(arrays), used, skipped)
