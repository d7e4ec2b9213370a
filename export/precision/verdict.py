"""The gate a converted (FP16/INT8) model must pass against its FP32 source: strict argmax agreement on
held-out images, and the mIoU drop when labelled images are given. A tie-tolerant figure is shown beside it
but never decides: without a tight error bound it excuses any candidate, noise and zeros included. The
models are run elsewhere (export.evaluation); this module only decides."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from export.parity import compare_outputs
from pspcore.errors import PSPError

# The default gates (strict argmax agreement with FP32) the targets declare (export.precision.targets): a float
# conversion only rounds, INT8 also clips to calibrated ranges.
FLOAT_GATE = 0.995  # fp16, bf16
INT8_GATE = 0.98


class GateError(PSPError):
    """A converted model below its gate: nothing was written (exit 1)."""


@dataclass(frozen=True)
class Verdict:
    """Candidate vs FP32 reference on the verification images. `agreement` (strict) decides;
    `tie_agreement` is shown only. mIoU figures are None without labelled images."""

    agreement: float
    tie_agreement: float
    max_rel_to_range: float
    images: int
    pixels: int
    miou_reference: float | None = None
    miou_candidate: float | None = None

    @property
    def miou_drop(self) -> float | None:
        """Reference mIoU minus candidate mIoU in percentage points (positive = worse)."""
        if self.miou_reference is None or self.miou_candidate is None:
            return None
        return 100 * (self.miou_reference - self.miou_candidate)

    def passes(self, min_agreement: float, max_miou_drop: float | None = None) -> bool:
        drop_ok = max_miou_drop is None or self.miou_drop is None or self.miou_drop <= max_miou_drop
        return bool(self.agreement >= min_agreement and drop_ok)

    def describe(self) -> str:
        text = (f"keeps {100 * self.agreement:.2f}% of the FP32 labels on {self.images} images "
                f"({100 * self.tie_agreement:.2f}% counting near-ties, shown only)")
        if self.miou_drop is not None:
            text += f", mIoU drop {self.miou_drop:+.2f} pts"
        return text

    def failure(self, what: str, min_agreement: float, max_miou_drop: float | None = None) -> str:
        """One line saying what the candidate reached and which gate it missed."""
        text = (f"{what} keeps {100 * self.agreement:.2f}% of the FP32 labels on {self.images} held-out images, "
                f"{'below' if self.agreement < min_agreement else 'at or above'} the gate {100 * min_agreement:g}%")
        if max_miou_drop is not None and self.miou_drop is not None:
            text += f"; mIoU drop {self.miou_drop:.2f} pts (allowed {max_miou_drop:g})"
        return text

    def to_dict(self) -> dict:
        return {**asdict(self), "miou_drop": self.miou_drop}


def judge(reference: np.ndarray, candidate: np.ndarray, miou: tuple[float, float] | None = None) -> Verdict:
    """Verdict of candidate logits [N, C, H, W] (or labels [N, H, W]) against reference logits; `miou`:
    (reference, candidate) mIoU from a labelled evaluation, if any."""
    report = compare_outputs(reference, candidate)
    return Verdict(agreement=report.argmax_agreement, tie_agreement=report.tie_agreement,
                   max_rel_to_range=report.max_rel_to_range, images=len(reference), pixels=report.pixels,
                   miou_reference=None if miou is None else miou[0], miou_candidate=None if miou is None else miou[1])
