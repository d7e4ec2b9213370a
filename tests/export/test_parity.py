import numpy as np
import pytest

from export.parity import compare_outputs, worst
from export.scenes import draw_scene, sample_batch
from pspcore.model_info import ModelInfo


def _logits(seed=0, shape=(2, 5, 9, 11)):
    return np.random.default_rng(seed).normal(0, 3, shape).astype(np.float32)


def test_identical_outputs():
    ref = _logits()
    report = compare_outputs(ref, ref.copy())
    assert report.max_abs == 0 and report.argmax_agreement == 1 and report.ok()
    assert report.pixels == 2 * 9 * 11


def test_error_relative_to_logit_range():
    ref = _logits()
    cand = ref.copy()
    cand[0, 0, 0, 0] += 0.01
    report = compare_outputs(ref, cand)
    assert report.max_abs == pytest.approx(0.01, rel=1e-3)
    assert report.max_rel_to_range == pytest.approx(0.01 / (ref.max() - ref.min()), rel=1e-3)
    assert not report.ok(max_rel=1e-4) and report.ok(max_rel=1e-2)
    assert "max error / logit range" in report.failure()


def test_a_decisive_flip_fails_but_a_near_tie_is_excused():
    ref = _logits()
    ref[0, :, 0, 0] = [0, 0, 0, 5.0, 5.0 + 1e-6]  # a tie between classes 3 and 4
    ref[0, :, 1, 1] = [0, 0, 0, 1.0, 5.0]  # a clear winner
    tie_flip = ref.copy()
    tie_flip[0, 3, 0, 0] += 2e-6
    report = compare_outputs(ref, tie_flip)
    assert report.argmax_agreement < 1 and report.tie_agreement == 1 and report.ok()
    clear_flip = np.zeros((2, 9, 11), np.int64) + ref.argmax(1)
    clear_flip[0, 1, 1] = 0
    labels = compare_outputs(ref, clear_flip)
    assert np.isnan(labels.max_abs) and labels.tie_agreement < 1
    assert not labels.ok(min_agreement=1.0)


def test_labels_candidate_and_shape_checks():
    ref = _logits()
    assert compare_outputs(ref, ref.argmax(1).astype(np.uint8)).argmax_agreement == 1
    with pytest.raises(ValueError, match="does not match"):
        compare_outputs(ref, ref[:, :, :5])
    with pytest.raises(ValueError, match="reference must be logits"):
        compare_outputs(ref[0], ref[0])


def test_worst_takes_the_worst_of_each_figure():
    ref = _logits()
    a = compare_outputs(ref, ref + 1e-3)
    b = compare_outputs(ref, ref.argmax(1))
    combined = worst([a, b])
    assert combined.max_abs == a.max_abs and combined.pixels == a.pixels + b.pixels
    assert combined.argmax_agreement == min(a.argmax_agreement, b.argmax_agreement)
    with pytest.raises(ValueError):
        worst([])


def test_sample_batch_is_deterministic_and_normalised():
    info = ModelInfo(num_classes=5)
    batch = sample_batch(info, (49, 81), 3, seed=1)
    assert batch.shape == (3, 3, 49, 81) and batch.dtype == np.float32
    assert np.array_equal(batch, sample_batch(info, (49, 81), 3, seed=1))
    scene = batch[0]
    assert np.abs(scene[:, -3:]).max() < 0.01  # letterbox padding: the (rounded) mean colour, about 0
    assert 0.2 < scene.std() < 3
    image = draw_scene(60, 80, seed=2)
    assert image.shape == (60, 80, 3) and image.dtype == np.uint8 and len(np.unique(image)) > 50
