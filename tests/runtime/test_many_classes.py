"""A model with 300 classes: every labels path of every backend that runs here keeps class ids past 255 (a path that
narrows them to uint8 wraps 300 to 44). The expected labels are the argmax of logits computed here with numpy
from the model's own weights, never by the runtime under test."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pspcore.registry import create_runner, unavailable_reason
from runtime.postprocess import to_labels
from tests.runtime.conftest import make_onnx

CLASSES = 300


def _many_class_onnx(path: Path) -> Path:
    """make_onnx's per-pixel linear classifier with 300 classes, its weights steered so that most pixels of a
    random image are won by a class above 255, each by a clear margin (no near-ties between runtimes)."""
    import onnx
    from onnx import numpy_helper

    make_onnx(path, num_classes=CLASSES)
    model = onnx.load(str(path))
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(CLASSES, 3, 1, 1)).astype(np.float32) * 4
    bias = np.zeros(CLASSES, np.float32)
    bias[256:] += 2.0  # the wide ids win more often
    for init in model.graph.initializer:
        init.CopyFrom(numpy_helper.from_array({"weight": weight, "bias": bias}[init.name], init.name))
    onnx.save(model, str(path))
    return path


def expected_labels(path: Path, batch: np.ndarray) -> np.ma.MaskedArray:
    """The argmax of W·x + b per pixel, from the file's initializers (numpy only); pixels whose top two logits
    are closer than 1e-4 of the logit range are masked (there another runtime's rounding may pick either)."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
    logits = np.einsum("kc,nchw->nkhw", inits["weight"][:, :, 0, 0], batch) + inits["bias"][None, :, None, None]
    top2 = np.sort(logits, axis=1)[:, -2:]
    tie = top2[:, 1] - top2[:, 0] < 1e-4 * (logits.max() - logits.min())
    assert tie.mean() < 0.01
    return np.ma.masked_array(logits.argmax(1), mask=tie)


def assert_labels_equal(labels: np.ndarray, expected: np.ma.MaskedArray) -> None:
    assert labels.shape == expected.shape
    clear = ~np.ma.getmaskarray(expected)
    np.testing.assert_array_equal(labels[clear], expected.data[clear])


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    return _many_class_onnx(tmp_path_factory.mktemp("many") / "many.onnx")


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(4).normal(size=(2, 3, 32, 32)).astype(np.float32)


def _backend(name: str) -> None:
    reason = unavailable_reason(name)
    if reason:
        pytest.skip(f"backend {name}: {reason}")


@pytest.mark.parametrize("backend,options", [("onnxruntime", {}), ("openvino", {}),
                                             ("openvino", {"output": "labels"})])
def test_labels_past_255_on_every_local_backend(many, batch, backend, options):
    _backend(backend)
    expected = expected_labels(many, batch)
    assert (expected > 255).mean() > 0.2, "the model must produce wide class ids for this test to mean anything"
    with create_runner(backend, many, **options) as runner:
        output = runner.infer(batch)
        labels = to_labels(output, runner.info.num_classes)
    assert labels.dtype == np.uint16
    assert_labels_equal(labels, expected)


def test_labels_past_255_through_the_served_ensemble(tmp_path_factory, batch):
    """The Triton image -> labels ensemble of the 300-class model, on the real server: its labels equal the
    argmax computed here on the same network input the ensemble's preprocess step makes."""
    import importlib.util

    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("the real Triton server needs nvidia-pytriton: pip install 'pspnet-deploy[serve]'")
    from export.triton.repository import export_triton
    from pspcore.preprocess import prepare_batch
    from runtime.serve import TritonServer, free_port

    work = tmp_path_factory.mktemp("triton-many")
    model = _many_class_onnx(work / "many.onnx")
    export_triton(model, work / "repo", name="many", ensemble=True, platform="python")
    frame = (np.random.default_rng(5).random((32, 32, 3)) * 255).astype(np.uint8)  # BGR, the model's own size
    with create_runner("onnxruntime", model) as local:
        net_input, boxes = prepare_batch([frame], local.info, local.input_spec.size)
    expected = expected_labels(model, net_input)
    assert (expected > 255).any() and boxes[0].resized == (32, 32) == net_input.shape[2:]  # no letterbox
    with TritonServer(work / "repo", free_port(), free_port(), startup_timeout=90) as server:
        with create_runner("triton", "many", url=server.http_url, protocol="http") as runner:
            served = runner.infer([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)])[0]
    assert served.dtype == np.uint16
    assert_labels_equal(served[None], expected)
