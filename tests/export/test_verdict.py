"""The gate can fail: noise, zeros and a constant-class candidate fail every verdict (the conversion gate and
ParityReport.ok without a tight error bound), while the FP32 export check keeps its near-tie excuse."""
import numpy as np
import pytest

from export.parity import compare_outputs
from export.precision.verdict import FLOAT_GATE, INT8_GATE, judge


def _reference(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, 5, 16, 16)) * 4).astype(np.float32)


def _garbage(reference):
    rng = np.random.default_rng(1)
    constant = np.zeros_like(reference)
    constant[:, 2] = 10.0
    return {"noise": rng.standard_normal(reference.shape).astype(np.float32) * reference.std(),
            "zeros": np.zeros_like(reference), "constant class": constant,
            "constant labels": np.full((2, 16, 16), 2, np.uint8)}


@pytest.mark.parametrize("kind", ["noise", "zeros", "constant class", "constant labels"])
def test_garbage_candidates_fail_every_verdict(kind):
    reference = _reference()
    candidate = _garbage(reference)[kind]
    verdict = judge(reference, candidate)
    for gate in (FLOAT_GATE, INT8_GATE):
        assert not verdict.passes(gate), verdict.describe()
    report = compare_outputs(reference, candidate)
    assert not report.ok(max_rel=float("inf"), min_agreement=0.97), report.describe()  # INT8 without error bound
    assert not report.ok(max_rel=1e-2, min_agreement=0.995), report.describe()  # FP16
    assert not report.ok(), report.describe()  # FP32


def test_zeros_would_pass_on_the_tie_figure_alone():
    """Why the tie-tolerant figure must not decide: with no error bound it excuses every pixel of zeros."""
    reference = _reference()
    report = compare_outputs(reference, np.zeros_like(reference))
    assert report.tie_agreement == 1.0 and report.argmax_agreement < 0.5
    assert report.deciding_agreement(float("inf")) == report.argmax_agreement
    assert judge(reference, np.zeros_like(reference)).tie_agreement == 1.0


def test_near_ties_excused_only_under_the_fp32_bound():
    reference = _reference()
    reference[:, 0] = reference[:, 1] + 1e-5  # class 0 barely ahead of class 1 everywhere it wins
    flipped = reference.copy()
    flipped[:, 1] += 2e-5  # a tiny error flips those near-ties
    report = compare_outputs(reference, flipped)
    assert report.argmax_agreement < 0.9 and report.ok()  # FP32 export check: tie excuse under a tight bound
    assert not report.ok(max_rel=float("inf"), min_agreement=0.98)  # no bound: strict agreement decides
    assert not judge(reference, flipped).passes(0.98)


def test_mIoU_drop_gate():
    reference = _reference()
    verdict = judge(reference, reference, miou=(0.60, 0.55))
    assert verdict.miou_drop == pytest.approx(5.0)
    assert verdict.passes(0.98) and verdict.passes(0.98, max_miou_drop=6) and not verdict.passes(0.98, max_miou_drop=1)
    assert "mIoU drop 5.00 pts (allowed 1)" in verdict.failure("INT8 model", 0.98, 1)
