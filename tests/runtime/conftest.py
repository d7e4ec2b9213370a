"""Runtime fixtures built without torch: tiny ONNX segmenters (a 1x1 Conv, optionally an ArgMax) made with
onnx.helper, and small generated videos, so the runtime tests also show that it needs no torch."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pspcore.model_info import ModelInfo

PALETTE = ((0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255))


def tiny_info(num_classes: int = 4, size=(32, 32), **changes) -> ModelInfo:
    return ModelInfo(arch="tiny-conv", num_classes=num_classes,
                     class_names=tuple(f"c{i}" for i in range(num_classes)),
                     palette=(PALETTE * num_classes)[:num_classes], input_size=size, **changes)


def make_onnx(path: Path, *, num_classes: int = 4, size=(32, 32), batch: int | None = None,
              dynamic_shape: bool = False, output: str = "logits", info: ModelInfo | None | bool = True) -> Path:
    """A per-pixel linear classifier: input `image` [N,3,H,W] -> `logits` [N,C,H,W] (or `labels` [N,H,W]).
    info=True writes tiny_info(...) as metadata, None writes none, a ModelInfo writes that one."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    h, w = ("H", "W") if dynamic_shape else size
    n = batch if batch else "N"
    weight = numpy_helper.from_array(rng.normal(size=(num_classes, 3, 1, 1)).astype(np.float32), "weight")
    bias = numpy_helper.from_array(np.linspace(-0.5, 0.5, num_classes).astype(np.float32), "bias")
    nodes = [helper.make_node("Conv", ["image", "weight", "bias"], ["logits"])]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, num_classes, h, w])
    if output == "labels":
        nodes += [helper.make_node("ArgMax", ["logits"], ["idx"], axis=1, keepdims=0),
                  helper.make_node("Cast", ["idx"], ["labels"], to=TensorProto.UINT8)]
        out = helper.make_tensor_value_info("labels", TensorProto.UINT8, [n, h, w])
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                            [n, 3, h, w])],
                              [out], initializer=[weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if info is True:
        info = tiny_info(num_classes, None if dynamic_shape else size, output=output,
                         dynamic_batch=batch is None, dynamic_shape=dynamic_shape)
    if info:
        onnx.helper.set_model_props(model, info.to_props())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def write_video(path: Path, frames: int = 30, size=(64, 48), fps: float = 10.0, codec: str = "MJPG") -> Path:
    """A moving bar on a changing background: every frame differs, so dropped/reordered frames show."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    assert writer.isOpened(), f"cannot write {codec} test video"
    w, h = size
    for i in range(frames):
        frame = np.full((h, w, 3), (i * 7) % 256, np.uint8)
        frame[:, (i * 2) % w: (i * 2) % w + 6] = (0, 0, 255)
        writer.write(frame)
    writer.release()
    return Path(path)


@pytest.fixture(scope="session")
def onnx_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="session")
def tiny_model(onnx_dir) -> Path:
    """Dynamic batch, fixed 32x32 input, 4 classes, with our metadata."""
    return make_onnx(onnx_dir / "tiny.onnx")


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.avi")


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory):
    """The real Triton server (nvidia-pytriton wheel) on free loopback ports, once per session, serving the
    tiny model as `plain` (python platform, dynamic batching) and as the image -> labels ensemble `pspnet`.
    Always stopped, even when a test fails; the server process must be gone afterwards."""
    import importlib.util

    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("the real Triton server needs nvidia-pytriton: pip install 'pspnet-deploy[serve]'")
    from export.triton.repository import export_triton
    from runtime.serve import TritonServer, free_port

    work = tmp_path_factory.mktemp("triton")
    model = make_onnx(work / "tiny.onnx", size=(32, 32))
    repo = work / "repo"
    export_triton(model, repo, name="pspnet", ensemble=True, platform="python", queue_delay_us=2000)
    export_triton(model, repo, name="plain", platform="python", queue_delay_us=2000)
    server = TritonServer(repo, free_port(), free_port(), startup_timeout=90)
    with server:
        server.model_path = model
        yield server
    assert server.process.poll() is not None, "tritonserver outlived the test session"
    assert not server.group_alive(), "a python-backend stub outlived the test session's server"
