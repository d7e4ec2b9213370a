"""The reference training augmentations (hszhao/semseg): random scale, rotate, Gaussian blur, horizontal flip
and random crop, on numpy/OpenCV arrays. Each transform maps (image HxWx3 float32 RGB 0..255, label HxW
uint8) to a new pair and draws its randomness from the `rng` it is given, so a sample's augmentation is
reproducible from (seed, epoch, index) whichever worker runs it. Geometry is applied identically to both:
the image is interpolated bilinearly, the label by nearest neighbour; new pixels are the mean colour in the
image and `ignore` (255) in the label."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pspcore.errors import InputError

IGNORE = 255


@dataclass(frozen=True)
class RandomScale:
    low: float = 0.5
    high: float = 2.0

    def __call__(self, image, label, rng):
        s = rng.uniform(self.low, self.high)
        h, w = label.shape
        size = (max(1, round(w * s)), max(1, round(h * s)))
        return (cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
                # NEAREST_EXACT samples pixel centres like the bilinear image resize; NEAREST is offset
                cv2.resize(label, size, interpolation=cv2.INTER_NEAREST_EXACT))


@dataclass(frozen=True)
class RandomRotate:
    degrees: float = 10.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ignore: int = IGNORE
    p: float = 0.5

    def __call__(self, image, label, rng):
        if rng.random() >= self.p:
            return image, label
        h, w = label.shape
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-self.degrees, self.degrees), 1.0)
        image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=tuple(float(v) for v in self.mean))
        label = cv2.warpAffine(label, matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=self.ignore)
        return image, label


@dataclass(frozen=True)
class RandomGaussianBlur:
    kernel: int = 5
    p: float = 0.5

    def __call__(self, image, label, rng):
        if rng.random() < self.p:  # the label is untouched: blur moves no boundary
            image = cv2.GaussianBlur(image, (self.kernel, self.kernel), 0)
        return image, label


@dataclass(frozen=True)
class RandomHorizontalFlip:
    p: float = 0.5

    def __call__(self, image, label, rng):
        if rng.random() < self.p:
            image, label = image[:, ::-1], label[:, ::-1]
        return image, label


@dataclass(frozen=True)
class RandomCrop:
    """Pad to at least `size` (image with the mean, label with `ignore`), then cut a random `size` window."""

    size: tuple[int, int]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ignore: int = IGNORE

    def __call__(self, image, label, rng):
        ch, cw = self.size
        h, w = label.shape
        pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
        if pad_h or pad_w:
            top, left = pad_h // 2, pad_w // 2
            image = cv2.copyMakeBorder(image, top, pad_h - top, left, pad_w - left, cv2.BORDER_CONSTANT,
                                       value=tuple(float(v) for v in self.mean))
            label = cv2.copyMakeBorder(label, top, pad_h - top, left, pad_w - left, cv2.BORDER_CONSTANT,
                                       value=self.ignore)
            h, w = label.shape
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return image[y:y + ch, x:x + cw], label[y:y + ch, x:x + cw]


@dataclass(frozen=True)
class Compose:
    transforms: tuple

    def __call__(self, image, label, rng):
        for t in self.transforms:
            image, label = t(image, label, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)


@dataclass(frozen=True)
class AugmentConfig:
    """The reference recipe by default; `scale=None`/`rotate=0`/`blur=False`/`flip=False` switch a step off."""

    crop: tuple[int, int]
    scale: tuple[float, float] | None = (0.5, 2.0)
    rotate: float = 10.0
    blur: bool = True
    flip: bool = True


def train_transform(config: AugmentConfig, mean) -> Compose:
    if config.scale is not None and not 0 < config.scale[0] <= config.scale[1]:
        raise InputError(f"scale range must be 0 < low <= high, got {config.scale}")
    if min(config.crop) < 1:
        raise InputError(f"crop size must be positive, got {config.crop}")
    mean = tuple(float(v) for v in mean)
    steps = [RandomScale(*config.scale) if config.scale is not None else None,
             RandomRotate(config.rotate, mean) if config.rotate > 0 else None,
             RandomGaussianBlur() if config.blur else None,
             RandomHorizontalFlip() if config.flip else None,
             RandomCrop(tuple(config.crop), mean)]
    return Compose(tuple(s for s in steps if s is not None))
