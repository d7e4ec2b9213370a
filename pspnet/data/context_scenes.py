"""`context-scenes`: a procedural dataset, generated from a seed with no download, in which an object's class
depends on the whole scene -- the paper's "mismatched relationship" made measurable.

Every scene is sky over either water (sea scene) or road (street scene), with one vehicle-like object on the
ground. The object is drawn identically in both scenes and the ground near it is the same neutral surface in
both, so nothing within a wide margin of the object carries a hint of its class: it is `boat` in a sea scene
and `car` in a street scene. The cues that decide it are far away: the sky's colour and a band of far ground
at the horizon (waves vs asphalt with lane marks), at least a quarter of the image above the object. At 129 px
that is still inside a dilated ResNet's receptive field (about 500 px); panoramas (2:1 or wider) show the scene
type only at one end, several image heights from the object, beyond an FCN's reach but inside the pyramid's
global pooling (experiments/ppm_ablation.py). The near ground is labelled as the surface it belongs to, so it is
context-dependent too. Birds are the small, inconspicuous class. Horizon height, object size and position
follow the same distribution in both scene types, so position is no shortcut.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pspcore.errors import InputError
from pspcore.files import atomic_output
from pspnet.labels import get_label_set

LABELS = get_label_set("context-scenes")
SKY, WATER, ROAD, BOAT, CAR, BIRD = range(6)
CONTEXT_CLASSES = ("water", "road", "boat", "car")  # decided by the scene, not by local appearance
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZE = 129
_TEXTURE_SCALE = 97  # textures and birds are drawn at their 97 px sizes times (size / 97)
_FAR_BAND = 0.08  # height of the far-ground band below the horizon, fraction of the image height
_MARGIN = 0.25  # neutral ground between that band and the object's top, fraction of the image size
DEFAULT_LENGTH = {"train": 2000, "val": 200, "test": 200}

_OBJECT_COLOURS = np.array([(200, 40, 40), (230, 200, 40), (235, 235, 235), (40, 150, 70), (230, 120, 30),
                            (60, 60, 200)], np.float32)
_NEUTRAL = np.array((128, 124, 120), np.float32)


@dataclass(frozen=True)
class SceneLayout:
    """The random choices behind one scene; `phase` and `shift` animate it in videos."""

    street: bool
    horizon: float  # fraction of the height
    obj_cx: float  # object centre x, fraction of the width
    obj_base: float  # object bottom, fraction of the ground height below the horizon
    obj_width: float  # fraction of the width
    colour: int
    tint: float  # brightness jitter for the whole scene
    birds: tuple[tuple[float, float, float], ...]  # (x, y in sky fraction, span in px at 97 px)
    phase: float = 0.0
    shift: float = 0.0
    cue_right: bool = False  # panoramas: the scene type shows at the right end (else the left)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "SceneLayout":
        n_birds = int(rng.integers(0, 4))
        return cls(street=bool(rng.integers(0, 2)), horizon=float(rng.uniform(0.18, 0.30)),
                   obj_cx=float(rng.uniform(0.3, 0.7)), obj_base=float(rng.uniform(0.6, 0.95)),
                   obj_width=float(rng.uniform(0.4, 0.6)), colour=int(rng.integers(len(_OBJECT_COLOURS))),
                   tint=float(rng.uniform(-12, 12)),
                   birds=tuple((float(rng.uniform(0.05, 0.95)), float(rng.uniform(0.2, 0.8)),
                                float(rng.uniform(8, 13))) for _ in range(n_birds)),
                   phase=float(rng.uniform(0, 2 * np.pi)), shift=float(rng.uniform(0, 50)),
                   cue_right=bool(rng.integers(0, 2)))  # drawn last: the draws before it stay as they were


_SKIES = {True: ((175, 170, 160), (215, 205, 185)), False: ((120, 170, 225), (190, 215, 240)),
          None: ((150, 165, 185), (200, 208, 212))}  # street, sea, and the neutral sky of a panorama's rest


def _sky(h: int, w: int, street: bool | None) -> np.ndarray:
    top, bottom = _SKIES[street]
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to((1 - t) * np.float32(top) + t * np.float32(bottom), (h, w, 3)).copy()


def _ground(h: int, w: int, street: bool, layout: SceneLayout, scale: float, rng) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if not street:
        waves = np.sin(2 * np.pi * y / (5 * scale) + 0.6 * np.sin(x / (6 * scale) + layout.phase) + layout.phase)
        return np.float32((35, 85, 150)) + waves[..., None] * np.float32((14, 22, 30))
    ground = np.broadcast_to(np.float32((88, 88, 92)), (h, w, 3)).copy()
    ground += rng.normal(0, 7, (h, w, 1)).astype(np.float32)  # asphalt grain
    dash = ((x + layout.shift * scale) % (14 * scale)) < 7 * scale
    for frac in (0.3, 0.65):  # two dashed lane lines across the road
        row = abs(y - frac * h) < max(1.0, 0.9 * scale)
        ground[row & dash] = (225, 225, 215)
    return ground


def _object_mask(h: int, w: int, cx: float, base: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """A hull (trapezoid) with a cabin and windows: the same silhouette for boat and car."""
    body, windows = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    hull_h, cab_h = 0.22 * width, 0.2 * width
    pts = np.array([(cx - width / 2, base - hull_h), (cx + width / 2, base - hull_h),
                    (cx + 0.38 * width, base), (cx - 0.38 * width, base)])
    cv2.fillPoly(body, [np.round(pts).astype(np.int32)], 1)
    x0, x1 = cx - 0.25 * width, cx + 0.2 * width
    cv2.rectangle(body, (round(x0), round(base - hull_h - cab_h)), (round(x1), round(base - hull_h)), 1, -1)
    for i in range(3):
        wx = x0 + (0.05 + 0.15 * i) * width
        cv2.rectangle(windows, (round(wx), round(base - hull_h - 0.75 * cab_h)),
                      (round(wx + 0.09 * width), round(base - hull_h - 0.3 * cab_h)), 1, -1)
    return body.astype(bool), (windows.astype(bool) & body.astype(bool))


@dataclass(frozen=True)
class _Frame:
    """Where a scene's parts go. A panorama (at least twice as wide as high) shows its scene type only in a
    square view at one end and puts the object in the rest, several image heights away from it; other
    images show it across the whole width and the object anywhere."""

    cue: slice  # columns of sky and far ground that show the scene type
    span: tuple[float, float]  # columns the object's centre is placed within
    object_scale: float  # the object's width is layout.obj_width times this

    @classmethod
    def of(cls, layout: SceneLayout, h: int, w: int) -> "_Frame":
        if w < 2 * h:
            return cls(slice(0, w), (0.0, float(w)), float(w))
        if layout.cue_right:
            return cls(slice(w - h, w), (0.0, float(w - h)), float(h))
        return cls(slice(0, h), (float(h), float(w)), float(h))


def render_scene(layout: SceneLayout, size: tuple[int, int], rng: np.random.Generator):
    """(image RGB uint8 HxWx3, label uint8 HxW) for one layout; `rng` adds the pixel noise."""
    h, w = size
    frame = _Frame.of(layout, h, w)
    view = frame.cue.stop - frame.cue.start
    scale = min(h, w) / _TEXTURE_SCALE
    horizon = int(round(layout.horizon * h))
    image = np.empty((h, w, 3), np.float32)
    label = np.empty((h, w), np.uint8)
    image[:horizon], label[:horizon] = _sky(horizon, w, None), SKY
    image[:horizon, frame.cue] = _sky(horizon, view, layout.street)
    band = max(2, int(round(_FAR_BAND * h)))
    image[horizon:] = _NEUTRAL  # the near ground: the same surface in both scene types
    image[horizon:horizon + band, frame.cue] = _ground(band, view, layout.street, layout, scale, rng)
    label[horizon:] = ROAD if layout.street else WATER

    width = layout.obj_width * frame.object_scale
    margin = max(3, int(round(_MARGIN * min(h, w))))
    # The object's top stays `margin` below the far band; its base anywhere from there to the bottom.
    top = horizon + band + margin + 0.42 * width
    base = top + layout.obj_base * max(0.0, h - 2 - top)
    lo, hi = frame.span
    body, windows = _object_mask(h, w, lo + layout.obj_cx * (hi - lo), base, width)
    image[body] = _OBJECT_COLOURS[layout.colour]
    image[windows] = (40, 45, 55)
    label[body] = CAR if layout.street else BOAT

    for bx, by, span in layout.birds:
        s = span * scale
        x, y = bx * w, by * horizon
        pts = np.round([(x - s / 2, y - s / 3), (x, y), (x + s / 2, y - s / 3)]).astype(np.int32)
        bird = np.zeros((h, w), np.uint8)
        cv2.polylines(bird, [pts], False, 1, thickness=max(2, int(round(2.2 * scale))))
        bird = bird.astype(bool)
        bird[horizon:] = False
        image[bird], label[bird] = (30, 30, 35), BIRD

    image += layout.tint + rng.normal(0, 5, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), label


class ContextScenes:
    """Deterministic scenes: item `i` of a split depends only on (seed, split, i, size).

    `scenes[i]` -> (image RGB uint8 HxWx3, label uint8 HxW), like every data source in pspnet.data."""

    label_set = LABELS

    def __init__(self, split: str = "train", length: int | None = None, size: int | tuple[int, int] = DEFAULT_SIZE,
                 seed: int = 0):
        if split not in SPLITS:
            raise InputError(f"unknown context-scenes split {split!r}; choose one of {', '.join(SPLITS)}")
        self.split, self.seed = split, int(seed)
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.length = DEFAULT_LENGTH[split] if length is None else int(length)
        if self.length < 1:
            raise InputError(f"context-scenes needs at least one image, got length={self.length}")
        if min(self.size) < 17:
            raise InputError(f"context-scenes images must be at least 17 px, got {self.size}")

    def __len__(self) -> int:
        return self.length

    def layout(self, index: int) -> SceneLayout:
        return SceneLayout.sample(np.random.default_rng([self.seed, SPLITS[self.split], index]))

    def __getitem__(self, index: int):
        if not 0 <= index < self.length:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index, 1])
        return render_scene(self.layout(index), self.size, rng)

    def describe(self, index: int) -> str:
        return f"context-scenes/{self.split}/{index}"


def export_split(root: str | os.PathLike, split: str = "val", n: int | None = None, seed: int = 0,
                 size: int = DEFAULT_SIZE) -> Path:
    """Write `n` scenes as PNGs under root/{split}/{images,labels} and the list file root/{split}.txt
    (`images/x.png labels/x.png` lines, relative to root); returns the list file's path."""
    scenes = ContextScenes(split, n, size, seed)
    root = Path(root)
    for sub in ("images", "labels"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(len(scenes)):
        image, label = scenes[i]
        rel_img, rel_lbl = f"{split}/images/{i:05d}.png", f"{split}/labels/{i:05d}.png"
        cv2.imwrite(str(root / rel_img), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / rel_lbl), label)
        lines.append(f"{rel_img} {rel_lbl}\n")
    list_path = root / f"{split}.txt"
    with atomic_output(list_path) as tmp:
        tmp.write_text("".join(lines))
    return list_path


def write_video(path: str | os.PathLike, num_frames: int = 120, size: int | tuple[int, int] = (240, 320),
                seed: int = 0, fps: float = 15.0) -> Path:
    """A moving context-scenes video: the object drifts across, waves and lane marks move, and halfway the
    scene cuts from sea to street, so the same object turns from boat into car. `size` is (H, W)."""
    h, w = (size, size) if isinstance(size, int) else size
    if num_frames < 1 or h < 17 or w < 17:
        raise InputError(f"write_video needs at least one frame of 17x17 px or more, got {num_frames} "
                         f"frames of {h}x{w}")
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if str(path).lower().endswith(".avi") else "mp4v"))
    base = SceneLayout.sample(np.random.default_rng([seed, 9]))
    rng = np.random.default_rng([seed, 10])
    with atomic_output(path, suffix=Path(path).suffix) as tmp:
        writer = cv2.VideoWriter(str(tmp), fourcc, float(fps), (w, h))
        if not writer.isOpened():
            raise InputError(f"OpenCV cannot write video {path} (use .mp4 or .avi)")
        try:
            for t in range(num_frames):
                u = t / max(1, num_frames - 1)
                layout = SceneLayout(**{**base.__dict__, "street": t >= num_frames // 2,
                                        "obj_cx": 0.25 + 0.5 * u, "phase": base.phase + 0.4 * t,
                                        "shift": base.shift + 1.5 * t,
                                        "birds": tuple(((bx + 0.01 * t) % 1.0, by, s) for bx, by, s in base.birds)})
                image, _ = render_scene(layout, (h, w), rng)
                writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
    return Path(path)
