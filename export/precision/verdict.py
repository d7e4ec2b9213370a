"""The gate a converted (FP16/INT8) model must pass against its FP32 source: strict argmax agreement on
held-out images, and the mIoU drop when labelled images are given. A tie-tolerant figure is shown beside it
but never decides: without a tight error bound it excuses any candidate, noise and zeros included. The
models are run elsewhere (export.evaluation); this module only decides.

How sure the figure is: the pixels of one image are strongly correlated (a region flips as a whole), so a
binomial bound over pixels would claim certainty from one image's millions of pixels. The image is the unit:
the per-image agreements are the sample, and the lower bound is the one-sided 95% Student-t bound on their
mean, mean - t(0.95, n-1) * sd / sqrt(n) (the pooled figure is that mean: every image has the same pixel
count). It needs no assumption about pixels, it widens with the spread between images and with few images,
and it is deterministic (no resampling). Below MIN_SURE_IMAGES images the spread itself is too poorly known
for the bound to mean much: the figure is reported as uncertain."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from export.parity import compare_outputs
from pspcore.errors import PSPError

# The default gates (strict argmax agreement with FP32) the targets declare (export.precision.targets): a float
# conversion only rounds, INT8 also clips to calibrated ranges.
FLOAT_GATE = 0.995  # fp16, bf16
INT8_GATE = 0.98

# What the gate is judged on (psp-export --gate-on): the pooled agreement over every verification pixel, or the
# lower confidence bound on it over the images (stricter: a model that wrecks one image in ten fails it).
GATE_ON = ("pooled", "lower-bound")
CONFIDENCE = 0.95  # of the lower bound (one-sided)
MIN_SURE_IMAGES = 10  # fewer verification images: the figure is said to be uncertain
# One-sided 95% quantiles of Student's t for 1..30 degrees of freedom (any statistics table); past 30 the
# Cornish-Fisher series around the normal quantile is exact to 1e-4.
_T95 = (6.3138, 2.9200, 2.3534, 2.1318, 2.0150, 1.9432, 1.8946, 1.8595, 1.8331, 1.8125, 1.7959, 1.7823, 1.7709,
        1.7613, 1.7531, 1.7459, 1.7396, 1.7341, 1.7291, 1.7247, 1.7207, 1.7171, 1.7139, 1.7109, 1.7081, 1.7056,
        1.7033, 1.7011, 1.6991, 1.6973)
_Z95 = 1.6448536


def t95(df: int) -> float:
    """The one-sided 95% quantile of Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T95):
        return _T95[df - 1]
    z = _Z95
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def lower_bound(per_image) -> float:
    """The one-sided 95% Student-t lower bound on the mean of the per-image agreements, within [0, 1]; 0 for
    fewer than 2 images (one image bounds nothing)."""
    values = np.asarray(per_image, np.float64)
    if len(values) < 2:
        return 0.0
    bound = values.mean() - t95(len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(min(max(bound, 0.0), 1.0))


class GateError(PSPError):
    """A converted model below its gate: nothing was written (exit 1)."""


@dataclass(frozen=True)
class Verdict:
    """Candidate vs FP32 reference on the verification images. `agreement` (strict, pooled over every pixel)
    decides, or its `lower_bound` over the images (`passes(on="lower-bound")`); `per_image`: the strict
    agreement of each image; `tie_agreement` is shown only. mIoU figures are None without labelled images."""

    agreement: float
    tie_agreement: float
    max_rel_to_range: float
    images: int
    pixels: int
    miou_reference: float | None = None
    miou_candidate: float | None = None
    per_image: tuple[float, ...] = ()

    @property
    def worst(self) -> float:
        return min(self.per_image, default=self.agreement)

    @property
    def spread(self) -> float:
        """Standard deviation of the per-image agreement (0 for one image)."""
        return float(np.std(self.per_image, ddof=1)) if len(self.per_image) > 1 else 0.0

    @property
    def lower_bound(self) -> float:
        return lower_bound(self.per_image)

    @property
    def uncertain(self) -> bool:
        """Judged on fewer than MIN_SURE_IMAGES images: the figure may not hold on others."""
        return self.images < MIN_SURE_IMAGES

    def figure(self, on: str = "pooled") -> float:
        """The agreement the gate compares: pooled, or its lower bound over the images."""
        if on not in GATE_ON:
            raise ValueError(f"gate on must be one of {', '.join(GATE_ON)}, got {on!r}")
        return self.lower_bound if on == "lower-bound" else self.agreement

    @property
    def miou_drop(self) -> float | None:
        """Reference mIoU minus candidate mIoU in percentage points (positive = worse)."""
        if self.miou_reference is None or self.miou_candidate is None:
            return None
        return 100 * (self.miou_reference - self.miou_candidate)

    def passes(self, min_agreement: float, max_miou_drop: float | None = None, on: str = "pooled") -> bool:
        drop_ok = max_miou_drop is None or self.miou_drop is None or self.miou_drop <= max_miou_drop
        return bool(self.figure(on) >= min_agreement and drop_ok)

    def describe(self) -> str:
        text = (f"keeps {100 * self.agreement:.2f}% of the FP32 labels on {self.images} images "
                f"({100 * self.tie_agreement:.2f}% counting near-ties, shown only)")
        if self.miou_drop is not None:
            text += f", mIoU drop {self.miou_drop:+.2f} pts"
        return text

    def confidence(self) -> str:
        """How sure the pooled figure is: per-image worst and spread, the lower bound, and whether it is uncertain."""
        text = (f"per image: worst {100 * self.worst:.2f}%, spread (sd) {100 * self.spread:.2f} pts; "
                f"{100 * CONFIDENCE:g}% lower bound {100 * self.lower_bound:.2f}% over {self.images} images")
        if self.uncertain:
            text += f" (uncertain: fewer than {MIN_SURE_IMAGES} verification images)"
        return text

    def failure(self, what: str, min_agreement: float, max_miou_drop: float | None = None, on: str = "pooled") -> str:
        """One line saying what the candidate reached and which gate it missed."""
        figure = self.figure(on)
        bound = (f" (its {100 * CONFIDENCE:g}% lower bound over the images {100 * figure:.2f}%)"
                 if on == "lower-bound" else "")
        text = (f"{what} keeps {100 * self.agreement:.2f}% of the FP32 labels on {self.images} held-out images"
                f"{bound}, {'below' if figure < min_agreement else 'at or above'} the gate {100 * min_agreement:g}%")
        if max_miou_drop is not None and self.miou_drop is not None:
            text += f"; mIoU drop {self.miou_drop:.2f} pts (allowed {max_miou_drop:g})"
        return text

    def to_dict(self) -> dict:
        return {**asdict(self), "per_image": list(self.per_image), "miou_drop": self.miou_drop, "worst": self.worst,
                "spread": self.spread, "lower_bound": self.lower_bound, "uncertain": self.uncertain}


def judge(reference: np.ndarray, candidate: np.ndarray, miou: tuple[float, float] | None = None) -> Verdict:
    """Verdict of candidate logits [N, C, H, W] (or labels [N, H, W]) against reference logits; `miou`:
    (reference, candidate) mIoU from a labelled evaluation, if any."""
    report = compare_outputs(reference, candidate)
    per_image = tuple(compare_outputs(reference[i:i + 1], candidate[i:i + 1]).argmax_agreement
                      for i in range(len(reference)))
    return Verdict(agreement=report.argmax_agreement, tie_agreement=report.tie_agreement,
                   max_rel_to_range=report.max_rel_to_range, images=len(reference), pixels=report.pixels,
                   miou_reference=None if miou is None else miou[0], miou_candidate=None if miou is None else miou[1],
                   per_image=per_image)
