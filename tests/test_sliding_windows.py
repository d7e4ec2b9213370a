"""psp-eval --mode slide and psp-infer --tile are one sliding-window rule (pspcore.sliding, semseg's layout):
through the library functions each command runs, the same image and model give the same labels. The model
sees its neighbourhood (a 5x5 conv) and where it is in the window (a per-position bias), so any difference
in padding, window origins or merging shows in the labels."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pspcore.geometry import runner_input_size
from pspcore.model_info import ModelInfo
from pspcore.registry import create_runner
from pspcore.sliding import SlidingWindows, window_starts
from pspnet.evaluate import EvalMode, predict_labels
from runtime.pipeline import Segmenter, SegmentOptions

WINDOW = (24, 24)
CLASSES = 5


def spatial_onnx(path: Path) -> Path:
    """image [N, 3, 24, 24] -> logits [N, 5, 24, 24] = conv5x5(image) + a bias that varies with position."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weight = numpy_helper.from_array(rng.normal(size=(CLASSES, 3, 5, 5)).astype(np.float32) * 0.2, "weight")
    where = numpy_helper.from_array(rng.normal(size=(1, CLASSES, *WINDOW)).astype(np.float32) * 2, "where")
    nodes = [helper.make_node("Conv", ["image", "weight"], ["conv"], pads=[2, 2, 2, 2]),
             helper.make_node("Add", ["conv", "where"], ["logits"])]
    graph = helper.make_graph(
        nodes, "spatial", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, *WINDOW])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES, *WINDOW])],
        initializer=[weight, where])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    info = ModelInfo(arch="spatial", num_classes=CLASSES, input_size=WINDOW)
    helper.set_model_props(model, info.to_props())
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    with create_runner("onnxruntime", spatial_onnx(tmp_path_factory.mktemp("slide") / "spatial.onnx")) as r:
        yield r


def eval_labels(runner, frame_bgr: np.ndarray) -> np.ndarray:
    """What psp-eval --mode slide --crop 24 computes for one image."""
    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    return predict_labels(runner.infer, rgb, EvalMode("slide", WINDOW), runner.info.mean, runner.info.std)


def infer_labels(runner, frame_bgr: np.ndarray) -> np.ndarray:
    """What psp-infer --tile computes for one frame (the pipeline's prepare -> infer -> finish)."""
    segmenter = Segmenter(runner, runner_input_size(runner, None), SegmentOptions(tile=True, progress=False))
    batch, layouts = segmenter.prepare([frame_bgr])
    return segmenter.finish([frame_bgr], runner.infer(batch), layouts)[0][0]


@pytest.mark.parametrize("size", [(41, 59), (24, 50), (17, 13)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_psp_eval_slide_and_psp_infer_tile_give_the_same_labels(runner, size):
    frame = np.random.default_rng(size[0]).integers(0, 256, (*size, 3), np.uint8)
    evaluated, inferred = eval_labels(runner, frame), infer_labels(runner, frame)
    assert evaluated.shape == inferred.shape == size
    assert len(np.unique(inferred)) > 1  # a real map, not one class everywhere
    np.testing.assert_array_equal(evaluated, inferred)


def test_the_layout_is_semsegs():
    """stride ceil(2/3 window), the last window flush with the edge; a small image padded half before."""
    assert window_starts(65, 33) == [0, 22, 32] and window_starts(33, 33) == [0]
    assert window_starts(70, 32) == [0, 22, 38]
    small = SlidingWindows.over((17, 13), WINDOW)
    assert small.padded == WINDOW and small.pad == (3, 5) and small.origins == ((0, 0),)
    crops = small.crops(np.ones((3, 17, 13), np.float32))
    assert crops[0, :, 3:20, 5:18].min() == 1 and crops[0].sum() == 3 * 17 * 13  # padding is 0 (the mean)
