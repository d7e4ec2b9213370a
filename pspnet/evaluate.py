"""Segmentation accuracy the way the paper reports it: intersection and union summed over the whole dataset,
then mIoU, mAcc and allAcc; whole-image, sliding-window, flip and multi-scale inference.

Inference goes through a `predict(batch float32 [N,3,H,W]) -> logits [N,C,H,W]` callable, so a PyTorch model
and every runtime backend (a Runner's `infer`) are measured by the same code on the same images."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from pspcore.class_names import class_names_for
from pspcore.colours import colorize, colour_table
from pspcore.errors import InputError
from pspcore.files import atomic_output
from pspcore.model_info import IMAGENET_MEAN, IMAGENET_STD
from pspcore.preprocess import normalize
from pspcore.sliding import SlidingWindows, softmax
from pspnet.data.transforms import IGNORE

Predict = Callable[[np.ndarray], np.ndarray]
MODES = ("whole", "slide")


def intersection_and_union(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore: int = IGNORE):
    """Per-class (intersection, union, target area) pixel counts of one prediction; `ignore` pixels excluded."""
    keep = target != ignore
    pred, target = pred[keep].astype(np.int64), target[keep].astype(np.int64)
    inter = np.bincount(target[pred == target], minlength=num_classes)[:num_classes]
    area_pred = np.bincount(pred, minlength=num_classes)[:num_classes]
    area_target = np.bincount(target, minlength=num_classes)[:num_classes]
    return inter, area_pred + area_target - inter, area_target


@dataclass
class EvalResult:
    """Dataset-level pixel counts per class and the metrics derived from them. Classes that never occur in
    the ground truth (target area 0) are left out of mIoU and mAcc, as in the reference code's NaN handling
    of empty unions."""

    class_names: tuple[str, ...]
    intersection: np.ndarray
    union: np.ndarray
    target: np.ndarray
    num_images: int = 0
    mode: str = "whole"
    details: dict = field(default_factory=dict)

    @property
    def iou(self) -> np.ndarray:
        return np.where(self.union > 0, self.intersection / np.maximum(self.union, 1), np.nan)

    @property
    def acc(self) -> np.ndarray:
        return np.where(self.target > 0, self.intersection / np.maximum(self.target, 1), np.nan)

    @property
    def present(self) -> np.ndarray:
        return self.target > 0

    @property
    def miou(self) -> float:
        return float(np.mean(self.iou[self.present])) if self.present.any() else float("nan")

    @property
    def macc(self) -> float:
        return float(np.mean(self.acc[self.present])) if self.present.any() else float("nan")

    @property
    def allacc(self) -> float:
        return float(self.intersection.sum() / max(int(self.target.sum()), 1))

    def to_dict(self) -> dict:
        def num(v):
            return None if np.isnan(v) else round(float(v), 6)

        return {"miou": num(self.miou), "macc": num(self.macc), "allacc": num(self.allacc),
                "num_images": self.num_images, "mode": self.mode, **self.details,
                "classes": [{"name": n, "iou": num(i), "acc": num(a), "pixels": int(t)}
                            for n, i, a, t in zip(self.class_names, self.iou, self.acc, self.target)]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        width = max(12, *(len(n) for n in self.class_names))
        lines = [f"{'class':<{width}}  {'IoU':>6}  {'Acc':>6}  {'pixels':>10}"]
        def fmt(v: float) -> str:
            return "   n/a" if np.isnan(v) else f"{100 * v:6.2f}"

        for name, iou, acc, t in zip(self.class_names, self.iou, self.acc, self.target):
            lines.append(f"{name:<{width}}  {fmt(iou)}  {fmt(acc)}  {int(t):>10}")
        lines.append(f"mIoU {100 * self.miou:.2f}  mAcc {100 * self.macc:.2f}  allAcc {100 * self.allacc:.2f}"
                     f"  ({self.num_images} images, {self.mode})")
        return "\n".join(lines)


@dataclass(frozen=True)
class EvalMode:
    """How one image is predicted: `whole` image or `slide` windows of `crop` with stride ceil(2/3 crop),
    optionally averaged with the flipped image and over `scales` (softmax probabilities summed).

    `scales` multiply the image's own size, or with `base_size` the long side is set to base_size x scale
    first, as semseg's test.py does (512 for ADE20K and VOC, 2048 for Cityscapes): the protocol behind its
    published numbers, whatever size the dataset's images have."""

    mode: str = "whole"
    crop: tuple[int, int] | None = None
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    base_size: int | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"unknown evaluation mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.mode == "slide" and (self.crop is None or min(self.crop) < 1):
            raise InputError("sliding-window evaluation needs a positive crop size (--crop)")
        if not self.scales or min(self.scales) <= 0:
            raise InputError(f"scales must be positive, got {self.scales}")
        if self.base_size is not None and self.base_size < 1:
            raise InputError(f"base size must be positive, got {self.base_size}")

    @property
    def is_plain(self) -> bool:
        return self.mode == "whole" and not self.flip and tuple(self.scales) == (1.0,) and self.base_size is None

    def scaled_size(self, height: int, width: int, scale: float) -> tuple[int, int]:
        """(height, width) to predict at for `scale`: the image's own size times scale, or with base_size the
        long side round(base_size x scale) and the short side in proportion (semseg's rounding)."""
        if self.base_size is None:
            return max(1, round(height * scale)), max(1, round(width * scale))
        long_side = round(self.base_size * scale)
        if height > width:
            return long_side, max(1, round(long_side / height * width))
        return max(1, round(long_side / width * height)), long_side

    def describe(self) -> str:
        parts = [self.mode + (f" {self.crop[0]}x{self.crop[1]}" if self.mode == "slide" else "")]
        if self.flip:
            parts.append("flip")
        if tuple(self.scales) != (1.0,):
            parts.append("scales " + ",".join(f"{s:g}" for s in self.scales))
        if self.base_size is not None:
            parts.append(f"base size {self.base_size}")
        return " + ".join(parts)


def _check_logits(out: np.ndarray, batch: np.ndarray) -> np.ndarray:
    if out.ndim == 3:
        raise InputError("the model outputs labels, not logits: only whole-image mode without flip or "
                         "scales applies to it")
    if out.ndim != 4 or out.shape[0] != len(batch) or out.shape[2:] != batch.shape[2:]:
        raise InputError(f"the model returned shape {tuple(out.shape)} for an input of {tuple(batch.shape[2:])}; "
                         "expected logits [N, C, H, W] at the input size (fixed-size model? try --mode slide "
                         "with --crop set to its input size)")
    return out.astype(np.float32, copy=False)


def window_probabilities(predict: Predict, batch: np.ndarray, flip: bool = False) -> np.ndarray:
    """Softmax probabilities [N, C, h, w] of a normalised batch [N, 3, h, w]; with `flip` averaged with those
    of the mirrored batch (semseg's net_process)."""
    prob = softmax(_check_logits(np.asarray(predict(batch)), batch), axis=1)
    if flip:
        mirrored = np.ascontiguousarray(batch[..., ::-1])
        prob = (prob + softmax(_check_logits(np.asarray(predict(mirrored)), mirrored), axis=1)[..., ::-1]) / 2
    return prob


def predict_sliding(predict: Predict, chw: np.ndarray, crop: tuple[int, int], flip: bool = False) -> np.ndarray:
    """Class probabilities [C, H, W] of a normalised image from windows of `crop`, one `predict` call per
    window (bounded memory), laid out and merged by pspcore.sliding as psp-infer --tile does."""
    windows = SlidingWindows.over(chw.shape[1:], crop)
    return windows.merge(np.concatenate([window_probabilities(predict, window[None], flip)
                                         for window in windows.crops(chw)]))


_RESIZE_CHANNELS = 64  # OpenCV resizes at most this many channels at once (fewer than ADE20K's 150 classes)


def resize_probabilities(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """[C, h, w] -> [C, height, width], bilinear, in groups of channels OpenCV accepts."""
    groups = [cv2.resize(np.ascontiguousarray(prob[i:i + _RESIZE_CHANNELS].transpose(1, 2, 0)), (width, height),
                         interpolation=cv2.INTER_LINEAR).reshape(height, width, -1)
              for i in range(0, prob.shape[0], _RESIZE_CHANNELS)]
    return np.concatenate(groups, axis=2).transpose(2, 0, 1)


def predict_probabilities(predict: Predict, image_rgb: np.ndarray, mode: EvalMode, mean, std) -> np.ndarray:
    """Class probabilities [C, H, W] for one RGB image under `mode`."""
    h, w = image_rgb.shape[:2]
    total = None
    for scale in mode.scales:
        sh, sw = mode.scaled_size(h, w, scale)
        resized = (sh, sw) != (h, w)
        scaled = cv2.resize(image_rgb, (sw, sh), interpolation=cv2.INTER_LINEAR) if resized else image_rgb
        chw = normalize(scaled, mean, std)
        if mode.mode == "whole":
            prob = window_probabilities(predict, chw[None], mode.flip)[0]
        else:
            prob = predict_sliding(predict, chw, mode.crop, mode.flip)
        prob = resize_probabilities(prob, h, w) if resized else prob
        total = prob if total is None else total + prob
    return total


def predict_labels(predict: Predict, image_rgb: np.ndarray, mode: EvalMode, mean, std) -> np.ndarray:
    """Class indices [H, W]. A model that outputs labels (not logits) supports whole-image mode only."""
    if mode.is_plain:
        chw = normalize(image_rgb, mean, std)
        out = np.asarray(predict(chw[None]))
        if out.ndim == 3 and out.shape[1:] == image_rgb.shape[:2]:  # a `labels` model: already argmax-ed
            return out[0].astype(np.int64)
        return _check_logits(out, chw[None])[0].argmax(0)
    return predict_probabilities(predict, image_rgb, mode, mean, std).argmax(0)


def evaluate(predict: Predict, data, num_classes: int, *, mode: EvalMode | str = "whole",
             class_names: Sequence[str] = (), mean=IMAGENET_MEAN, std=IMAGENET_STD,
             save_png: str | os.PathLike | None = None, palette: Sequence[Sequence[int]] = (),
             limit: int | None = None, progress: bool = True) -> EvalResult:
    """Run `predict` over a data source (`data[i]` -> (RGB uint8, label uint8), e.g. ContextScenes or
    ListFileSource) and accumulate dataset-level intersection/union. `save_png` writes colour predictions."""
    from pspnet.data.dataset import SegmentationDataset  # validates pairs (size, label range) the same way

    mode = EvalMode(mode) if isinstance(mode, str) else mode
    pairs = SegmentationDataset(data, num_classes, mean, std)
    n = len(pairs) if limit is None else min(limit, len(pairs))
    names = class_names_for(num_classes, class_names)
    colours = colour_table(palette, num_classes, bgr=True)
    inter, union, target = (np.zeros(num_classes, np.int64) for _ in range(3))
    out_dir = Path(save_png) if save_png else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(n), desc="eval", unit="img", disable=not progress):
        image, label = pairs.load(i)
        pred = predict_labels(predict, image, mode, mean, std)
        if pred.max(initial=0) >= num_classes:
            raise InputError(f"the model predicted class {int(pred.max())} but the dataset has {num_classes} "
                             "classes: model and dataset do not match")
        a, b, c = intersection_and_union(pred, label, num_classes)
        inter += a
        union += b
        target += c
        if out_dir:
            with atomic_output(out_dir / f"{i:05d}.png", suffix=".png") as tmp:
                cv2.imwrite(str(tmp), colorize(pred, colours))
    return EvalResult(names, inter, union, target, num_images=n, mode=mode.describe())
