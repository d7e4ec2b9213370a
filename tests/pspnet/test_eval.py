"""pspnet.evaluate: metrics on hand-computed cases, sliding window / flip / multi-scale, labels models, psp-eval."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from pspcore.errors import InputError
from pspcore.model_info import ModelInfo
from pspnet.checkpoint import save_checkpoint
from pspnet.eval_cli import main as eval_main
from pspnet.evaluate import (
    EvalMode,
    EvalResult,
    evaluate,
    intersection_and_union,
    predict_probabilities,
    predict_sliding,
)
from pspnet.factory import create_model
from pspnet.labels import get_label_set

MEAN, STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
CODES = np.array([(200, 0, 0), (0, 200, 0), (0, 0, 200)], np.float32)


def test_intersection_and_union_by_hand():
    target = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 1, 0]])  # the last pixel is ignored whatever is predicted
    inter, union, area = intersection_and_union(pred, target, 3)
    # class 0: pred {00}, target {00,01} -> I 1, U 2; class 1: pred {01,02,10,11}, target {02,10} -> I 2, U 4;
    # class 2: pred {}, target {11} -> I 0, U 1
    np.testing.assert_array_equal(inter, [1, 2, 0])
    np.testing.assert_array_equal(union, [2, 4, 1])
    np.testing.assert_array_equal(area, [2, 2, 1])


def test_metrics_are_dataset_level_not_image_averages():
    # Image 1: class 0 perfect on 1 pixel. Image 2: class 0 has 1 of 3 right. Dataset IoU 2/4, not (1 + 1/3)/2.
    counts = [intersection_and_union(np.array([0]), np.array([0]), 2),
              intersection_and_union(np.array([0, 1, 1]), np.array([0, 0, 0]), 2)]
    total = [sum(c[i] for c in counts) for i in range(3)]
    result = EvalResult(("a", "b"), *total, num_images=2)
    assert result.iou[0] == pytest.approx(2 / 4)
    assert math.isnan(result.acc[1])  # class b never in the ground truth: left out of the means
    assert result.miou == pytest.approx(0.5) and result.macc == pytest.approx(2 / 4)
    assert result.allacc == pytest.approx(2 / 4)
    data = json.loads(result.to_json())
    assert data["miou"] == 0.5 and data["classes"][1]["iou"] == 0.0 and data["classes"][1]["acc"] is None
    assert "mIoU 50.00" in result.table()


def coded_source(n=3, size=(40, 52)):
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(n):
        label = np.kron(rng.integers(0, 3, (size[0] // 4, size[1] // 4)), np.ones((4, 4))).astype(np.uint8)
        pairs.append((CODES[label].astype(np.uint8), label))
    return pairs


def oracle(batch):
    """Logits from the pixel colours (the inputs are the raw codes: mean 0, std 1)."""
    return -np.linalg.norm(batch[:, None] - CODES[None, :, :, None, None], axis=2)


@pytest.mark.parametrize("mode", [EvalMode("whole"), EvalMode("slide", (17, 17)), EvalMode("whole", flip=True),
                                  EvalMode("slide", (64, 64), flip=True)], ids=str)
def test_a_perfect_predictor_scores_100_in_every_mode(mode):
    result = evaluate(oracle, coded_source(), 3, mode=mode, mean=MEAN, std=STD, progress=False)
    assert result.miou == 1.0 and result.allacc == 1.0 and result.num_images == 3


def test_multi_scale_sums_probabilities_back_at_full_size():
    result = evaluate(oracle, coded_source(), 3, mode=EvalMode("whole", scales=(0.5, 1.0, 1.5)), mean=MEAN,
                      std=STD, progress=False)
    assert result.allacc > 0.97


def test_multi_scale_runs_every_scale_and_sums_their_probabilities():
    """Class 0 mildly at the small scales, class 1 strongly at the largest: only the sum over all three
    scales picks class 1 (ignoring a scale, or averaging logits instead of probabilities, gives class 0)."""
    seen = []

    def by_scale(batch):
        seen.append(tuple(batch.shape[2:]))
        logits = np.zeros((1, 2, *batch.shape[2:]), np.float32)
        if batch.shape[2] > 50:
            logits[:, 1] = 4.0
        else:
            logits[:, 0] = 1.0
        return logits

    image = coded_source()[0][0]  # 40x52
    probs = predict_probabilities(by_scale, image, EvalMode("whole", scales=(0.5, 1.0, 1.5)), MEAN, STD)
    assert seen == [(20, 26), (40, 52), (60, 78)] and probs.shape == (2, 40, 52)
    np.testing.assert_allclose(probs.sum(0), 3.0, rtol=1e-5)  # three probability maps at full size
    assert (probs.argmax(0) == 1).all()


def test_overlapping_windows_average_their_logits():
    """Two windows over a 1x5 image overlap at x=2; there the average picks class 1, where first-wins says 0,
    last-wins 2 and max a tie resolved to 0."""
    windows = iter([np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.9], [0.0, 0.0, 0.0]]),
                    np.array([[0.0, 0.0, 0.0], [0.9, 0.0, 0.0], [1.0, 1.0, 1.0]])])

    def next_window(batch):
        assert batch.shape == (1, 3, 1, 3)
        return next(windows)[None, :, None, :].astype(np.float32)

    logits = predict_sliding(next_window, np.zeros((3, 1, 5), np.float32), (1, 3))
    assert logits.argmax(0)[0].tolist() == [0, 0, 1, 2, 2]


def test_sliding_window_stride_is_two_thirds_of_the_crop():
    seen = []

    def record(batch):
        seen.append(batch.shape[2:])
        return np.zeros((1, 2, *batch.shape[2:]), np.float32)

    out = predict_sliding(record, np.zeros((3, 65, 65), np.float32), (33, 33))
    assert out.shape == (2, 65, 65)
    assert len(seen) == 9 and set(seen) == {(33, 33)}  # stride ceil(22): windows at 0, 22, 32 per axis
    seen.clear()
    predict_sliding(record, np.zeros((3, 20, 30), np.float32), (33, 33))  # smaller than the crop: padded
    assert seen == [(33, 33)]


def test_labels_models_work_whole_image_only():
    def labels_model(batch):
        return oracle(batch).argmax(1).astype(np.uint8)

    assert evaluate(labels_model, coded_source(), 3, mean=MEAN, std=STD, progress=False).miou == 1.0
    with pytest.raises(InputError, match="outputs labels"):
        evaluate(labels_model, coded_source(), 3, mode=EvalMode("slide", (17, 17)), mean=MEAN, std=STD,
                 progress=False)


def test_mismatched_model_and_bad_modes_are_input_errors():
    with pytest.raises(InputError, match="predicted class 2 but the dataset has 2"):
        evaluate(oracle, [(p[0], np.minimum(p[1], 1)) for p in coded_source()], 2, mean=MEAN, std=STD,
                 progress=False)
    with pytest.raises(InputError, match="needs a positive crop"):
        EvalMode("slide")
    with pytest.raises(InputError, match="returned shape"):
        evaluate(lambda b: np.zeros((1, 3, 8, 8), np.float32), coded_source(), 3, mean=MEAN, std=STD,
                 progress=False)


def test_save_png_uses_the_palette(tmp_path):
    palette = ((10, 20, 30), (40, 50, 60), (70, 80, 90))
    evaluate(oracle, coded_source(1), 3, mean=MEAN, std=STD, save_png=tmp_path, palette=palette, progress=False)
    png = cv2.cvtColor(cv2.imread(str(tmp_path / "00000.png")), cv2.COLOR_BGR2RGB)
    label = coded_source(1)[0][1]
    np.testing.assert_array_equal(png, np.array(palette, np.uint8)[label])


@pytest.fixture(scope="module")
def context_checkpoint(tmp_path_factory):
    labels = get_label_set("context-scenes")
    info = ModelInfo(arch="pspnet18-tiny", num_classes=6, class_names=labels.class_names, palette=labels.palette,
                     input_size=(33, 33), dataset="context-scenes")
    path = tmp_path_factory.mktemp("eval") / "model.pth"
    return save_checkpoint(path, create_model("pspnet18-tiny", 6).eval(), info)


def test_psp_eval_reads_everything_from_the_checkpoint(context_checkpoint, tmp_path):
    args = [str(context_checkpoint), "--scenes", "2", "--json", "-", "--save-png", str(tmp_path / "png")]
    result = CliRunner().invoke(eval_main, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["num_images"] == 2 and [c["name"] for c in data["classes"]][3:5] == ["boat", "car"]
    assert len(list((tmp_path / "png").glob("*.png"))) == 2
    table = CliRunner().invoke(eval_main, [str(context_checkpoint), "--scenes", "1", "--mode", "slide", "--flip"])
    assert table.exit_code == 0 and "slide 33x33 + flip" in table.output


@pytest.mark.parametrize("args, message", [(["missing.pth"], "model not found"),
                                           (["{ckpt}", "--dataset", "missing.txt"], "list file not found")])
def test_psp_eval_bad_input_is_one_line(context_checkpoint, args, message):
    args = [a.format(ckpt=context_checkpoint) for a in args]
    result = CliRunner().invoke(eval_main, args)
    assert result.exit_code == 2 and result.output.startswith("error: ") and message in result.output
    assert result.output.count("\n") == 1


def test_base_size_sets_the_long_side_like_semseg_and_many_classes_resize():
    from pspnet.evaluate import EvalMode, predict_probabilities

    mode = EvalMode("whole", base_size=512, scales=(1.0, 0.5))
    assert mode.scaled_size(375, 500, 1.0) == (384, 512) and mode.scaled_size(500, 375, 0.5) == (256, 192)
    assert EvalMode("whole", scales=(1.0,)).scaled_size(30, 40, 1.0) == (30, 40) and not mode.is_plain
    seen = []

    def predict(batch):  # 150 classes, as ADE20K: more channels than OpenCV resizes at once
        seen.append(batch.shape[2:])
        return np.zeros((1, 150, *batch.shape[2:]), np.float32)

    prob = predict_probabilities(predict, np.zeros((30, 40, 3), np.uint8), EvalMode("whole", base_size=20),
                                 (0, 0, 0), (1, 1, 1))
    assert seen == [(15, 20)] and prob.shape == (150, 30, 40)
    np.testing.assert_allclose(prob, 1 / 150, rtol=1e-5)
