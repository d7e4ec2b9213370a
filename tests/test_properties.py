"""Property-based tests (hypothesis) for the rules that are arithmetic: the exact pooling matrices, the sliding
window layout and merge, the agreement gate and the label encodings. Every expected value is computed here
independently, by a direct loop or by the library the rule stands in for, never by the code under test."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pspcore.label_maps import MAX_CLASSES, as_labels, graph_label_dtype, label_dtype
from pspcore.sliding import STRIDE_RATE, SlidingWindows

# Few examples each: the suite runs on 2 cores; the strategies reach the edges (1-pixel maps, bins larger
# than the map, windows as large as the image) on purpose.
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- exact adaptive pooling: the averaging matrices against torch's own adaptive_avg_pool2d ----

@FEW
@given(h=st.integers(1, 40), w=st.integers(1, 40), bh=st.integers(1, 8), bw=st.integers(1, 8),
       seed=st.integers(0, 2**16))
def test_pooling_matrices_equal_adaptive_avg_pool2d(h, w, bh, bw, seed):
    torch = pytest.importorskip("torch")
    from export.onnx.pooling import ExactAdaptiveAvgPool2d, pooling_matrix

    x = torch.from_numpy(np.random.default_rng(seed).normal(size=(2, 3, h, w)).astype(np.float32))
    expected = torch.nn.functional.adaptive_avg_pool2d(x, (bh, bw))
    for size in ((h, w), None):  # static matrices and the ones built from the runtime shape
        got = ExactAdaptiveAvgPool2d((bh, bw), size)(x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    rows = pooling_matrix(h, bh).numpy()
    assert rows.shape == (bh, h) and np.allclose(rows.sum(1), 1.0)
    for i in range(bh):  # row i covers exactly floor(i·H/b) .. ceil((i+1)·H/b)-1 (FACTS.md)
        start, end = (i * h) // bh, -((-(i + 1) * h) // bh)
        assert list(np.flatnonzero(rows[i])) == list(range(start, end))


# ---- sliding windows: layout and merge against a direct loop over pixels ----

def _direct_starts(length: int, window: int) -> list[int]:
    """semseg's tool/test.py grid, written as its loop: windows every ceil(2/3 window), the last flush."""
    stride = int(math.ceil(window * STRIDE_RATE))
    grids = int(math.ceil(float(length - window) / stride) + 1)
    return [min(i * stride, length - window) for i in range(grids)]


@FEW
@given(h=st.integers(1, 60), w=st.integers(1, 60), wh=st.integers(1, 30), ww=st.integers(1, 30),
       seed=st.integers(0, 2**16))
def test_sliding_windows_layout_and_merge_equal_a_direct_loop(h, w, wh, ww, seed):
    windows = SlidingWindows.over((h, w), (wh, ww))
    ph, pw = max(h, wh), max(w, ww)
    assert windows.padded == (ph, pw)
    assert windows.pad == ((ph - h) // 2, (pw - w) // 2)  # half before, the odd pixel after
    expected_origins = [(y, x) for y in _direct_starts(ph, wh) for x in _direct_starts(pw, ww)]
    assert list(windows.origins) == expected_origins

    rng = np.random.default_rng(seed)
    image = rng.normal(size=(2, h, w)).astype(np.float32)
    crops = windows.crops(image)
    top, left = windows.pad
    for (y, x), crop in zip(expected_origins, crops):
        for cy in range(0, wh, max(1, wh // 3)):  # a few pixels of each crop, against the padded image
            for cx in range(0, ww, max(1, ww // 3)):
                iy, ix = y + cy - top, x + cx - left
                inside = 0 <= iy < h and 0 <= ix < w
                assert np.array_equal(crop[:, cy, cx], image[:, iy, ix] if inside else np.zeros(2, np.float32))

    probs = rng.random((len(expected_origins), 3, wh, ww)).astype(np.float32)
    merged = windows.merge(probs)
    assert merged.shape == (3, h, w)
    for iy in range(0, h, max(1, h // 4)):
        for ix in range(0, w, max(1, w // 4)):
            py, px = iy + top, ix + left
            covering = [p[:, py - y, px - x] for (y, x), p in zip(expected_origins, probs)
                        if y <= py < y + wh and x <= px < x + ww]
            assert covering, "every pixel is covered by a window"
            np.testing.assert_allclose(merged[:, iy, ix], np.mean(covering, axis=0), rtol=1e-5)


# ---- the agreement gate against a reference implementation ----

def _reference_agreement(reference_logits: np.ndarray, candidate: np.ndarray) -> float:
    ref = reference_logits.argmax(1)
    cand = candidate if candidate.ndim == 3 else candidate.argmax(1)
    return float(np.count_nonzero(ref == cand)) / ref.size


label_cases = st.tuples(st.integers(1, 3), st.integers(2, 6), st.integers(1, 9), st.integers(1, 9),
                        st.integers(0, 2**16), st.floats(0.0, 1.0))


@FEW
@given(case=label_cases)
def test_the_gate_agrees_with_a_reference_count_and_is_a_closed_bound(case):
    from export.precision.verdict import judge

    n, classes, h, w, seed, flip_share = case
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=(n, classes, h, w)).astype(np.float32)
    labels = reference.argmax(1)
    flipped = rng.random(labels.shape) < flip_share  # these pixels get another class
    candidate_labels = np.where(flipped, (labels + 1) % classes, labels)
    expected = _reference_agreement(reference, candidate_labels)

    for candidate in (candidate_labels, np.eye(classes, dtype=np.float32)[candidate_labels].transpose(0, 3, 1, 2)):
        verdict = judge(reference, candidate)
        assert verdict.agreement == pytest.approx(expected, abs=1e-12)
        assert verdict.pixels == labels.size and verdict.images == n
        assert verdict.passes(expected)  # a model exactly at the gate passes (">= gate")
        if expected > 0:
            assert not verdict.passes(math.nextafter(expected, 2.0))  # just above its agreement: it fails


@FEW
@given(case=label_cases)
def test_the_mIoU_part_of_the_gate_is_a_closed_bound(case):
    from export.precision.verdict import judge

    n, classes, h, w, seed, drop = case
    reference = np.random.default_rng(seed).normal(size=(n, classes, h, w)).astype(np.float32)
    verdict = judge(reference, reference.argmax(1), miou=(0.8, 0.8 - drop / 100))
    assert verdict.miou_drop == pytest.approx(drop)
    assert verdict.passes(1.0, max_miou_drop=verdict.miou_drop)
    assert not verdict.passes(1.0, max_miou_drop=verdict.miou_drop - 1e-6)


# ---- label encodings: every class id survives every encoding a label map travels in ----

@FEW
@given(num_classes=st.integers(1, MAX_CLASSES), seed=st.integers(0, 2**16))
def test_label_encodings_round_trip(num_classes, seed, tmp_path_factory):
    import cv2

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=(5, 7), dtype=np.int64)
    labels.flat[0] = num_classes - 1  # the largest id is always there
    stored = as_labels(labels, num_classes)
    assert stored.dtype == label_dtype(num_classes)
    assert np.array_equal(stored.astype(np.int64), labels)
    # The model's own labels output holds every id too (TensorRT: no 16-bit integers, so int32 past 256).
    graph = labels.astype(graph_label_dtype(num_classes))
    assert np.array_equal(graph.astype(np.int64), labels)
    # PNG masks (8 or 16 bit) read back unchanged.
    path = tmp_path_factory.mktemp("png") / "mask.png"
    assert cv2.imwrite(str(path), stored)
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.dtype == stored.dtype and np.array_equal(back, stored)


def test_label_dtype_boundaries_are_the_documented_ones():
    assert label_dtype(256) == np.uint8 and label_dtype(257) == np.uint16 and label_dtype(0) == np.uint16
    assert graph_label_dtype(256) == np.uint8 and graph_label_dtype(257) == np.int32
