"""How close a converted model's output is to the reference: max error, error relative to the logit range,
argmax agreement. Shared by the ONNX export check and the FP16 / INT8 / TensorRT checks (their test inputs
are drawn in export.scenes)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
