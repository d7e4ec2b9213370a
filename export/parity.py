"""How close a converted model's output is to the reference: max error, error relative to the logit range,
argmax agreement. Shared by the ONNX export check and the FP16 / INT8 / TensorRT checks, with the test
inputs they all use (random and a drawn street-like scene, preprocessed like real frames)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pspcore.errors import InputError
from pspcore.model_info import ModelInfo
from pspcore.preprocess import prepare_frame

FP32_MAX_REL = 1e-4  # max error / logit range allowed for an FP32 export
FP32_MIN_AGREEMENT = 0.9999
# Near-ties may excuse a flipped pixel only under an error bound at most this tight (relative to the logit
# range): the excuse margin is twice the observed error, so with a loose or no bound a candidate that outputs
# noise or zeros (error ~ the logit range) would be excused everywhere.
TIE_TOLERANT_MAX_REL = 1e-3


@dataclass(frozen=True)
class ParityReport:
    """Reference vs candidate on the same inputs. `max_abs`/`max_rel_to_range` are NaN when the candidate
    gives labels only. `tie_agreement` also counts as agreeing the pixels whose reference top-2 logits are
    closer than `tie_margin`: there a flip says nothing about the conversion, and on a small image one such
    pixel alone would drop plain agreement below 99.99%."""

    max_abs: float
    max_rel_to_range: float
    argmax_agreement: float
    tie_agreement: float
    logit_range: float
    tie_margin: float
    pixels: int

    def ok(self, max_rel: float = FP32_MAX_REL, min_agreement: float = FP32_MIN_AGREEMENT) -> bool:
        """Within the error bound and agreeing enough. The tie-tolerant agreement counts only under a tight
        bound (TIE_TOLERANT_MAX_REL, the FP32 export check) or for labels (a fixed 1e-5 margin); otherwise
        strict argmax agreement decides (FP16/INT8 verdicts)."""
        error_ok = np.isnan(self.max_rel_to_range) or self.max_rel_to_range <= max_rel
        return bool(error_ok and self.deciding_agreement(max_rel) >= min_agreement)

    def deciding_agreement(self, max_rel: float = FP32_MAX_REL) -> float:
        """The agreement `ok` compares with its gate under the error bound `max_rel`."""
        tie_sound = np.isnan(self.max_rel_to_range) or max_rel <= TIE_TOLERANT_MAX_REL
        return self.tie_agreement if tie_sound else self.argmax_agreement

    def describe(self) -> str:
        parts = [] if np.isnan(self.max_abs) else [f"max abs error {self.max_abs:.3g}",
                                                     f"max error / logit range {self.max_rel_to_range:.3g}"]
        agreement = f"argmax agreement {100 * self.argmax_agreement:.4f}%"
        if self.tie_agreement != self.argmax_agreement:
            agreement += f" ({100 * self.tie_agreement:.4f}% counting near-ties)"
        return ", ".join([*parts, agreement])

    def failure(self, max_rel: float = FP32_MAX_REL, min_agreement: float = FP32_MIN_AGREEMENT) -> str:
        """Why `ok` is False, in one line."""
        return (f"{self.describe()}; allowed: error / range <= {max_rel:g}, "
                f"agreement >= {100 * min_agreement:g}%")


def _top2_margin(logits: np.ndarray) -> np.ndarray:
    if logits.shape[1] < 2:
        return np.full(logits[:, 0].shape, np.inf, np.float32)
    top2 = np.partition(logits, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, tie_margin: float | None = None
                    ) -> ParityReport:
    """Compare reference logits [N, C, H, W] with candidate logits of the same shape, or with candidate
    labels [N, H, W]. `tie_margin` defaults to twice the observed max error (logits) or 1e-5 of the logit
    range (labels, where the error is not observable)."""
    reference = np.asarray(reference, np.float32)
    candidate = np.asarray(candidate)
    if reference.ndim != 4:
        raise ValueError(f"reference must be logits [N, C, H, W], got shape {reference.shape}")
    labels_only = candidate.ndim == 3
    expected = reference.shape[:1] + reference.shape[2:] if labels_only else reference.shape
    if candidate.shape != expected:
        raise ValueError(f"candidate shape {candidate.shape} does not match reference {reference.shape}")
    logit_range = float(reference.max() - reference.min()) or 1.0
    if labels_only:
        max_abs = max_rel = float("nan")
        margin = 1e-5 * logit_range if tie_margin is None else tie_margin
        cand_labels = candidate.astype(np.int64)
    else:
        max_abs = float(np.abs(candidate.astype(np.float32) - reference).max())
        max_rel = max_abs / logit_range
        margin = 2 * max_abs if tie_margin is None else tie_margin
        cand_labels = candidate.argmax(1)
    agree = reference.argmax(1) == cand_labels
    excused = agree | (_top2_margin(reference) <= margin)
    return ParityReport(max_abs=max_abs, max_rel_to_range=max_rel, argmax_agreement=float(agree.mean()),
                        tie_agreement=float(excused.mean()), logit_range=logit_range, tie_margin=float(margin),
                        pixels=int(agree.size))


def worst(reports: list[ParityReport]) -> ParityReport:
    """One report holding the worst figure of each kind over several checks."""
    if not reports:
        raise ValueError("no parity reports to combine")

    def largest(values):
        real = [v for v in values if not np.isnan(v)]
        return max(real) if real else float("nan")

    return ParityReport(
        max_abs=largest(r.max_abs for r in reports),
        max_rel_to_range=largest(r.max_rel_to_range for r in reports),
        argmax_agreement=min(r.argmax_agreement for r in reports),
        tie_agreement=min(r.tie_agreement for r in reports),
        logit_range=min(r.logit_range for r in reports),
        tie_margin=max(r.tie_margin for r in reports),
        pixels=sum(r.pixels for r in reports),
    )


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
