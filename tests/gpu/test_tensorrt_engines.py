"""TensorRT engines on a real GPU: FP32/FP16/INT8 parity with PyTorch, dynamic batch, CUDA graphs, buffer
reuse, and refusing an engine whose sidecar names another GPU. Every output is compared with PyTorch on the same
input, never with another output of the engine. Skipped without TensorRT, cuda-python or a GPU."""
import json

import cv2
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt]
pytest.importorskip("tensorrt", reason="needs TensorRT (pip install tensorrt) and an NVIDIA GPU")
pytest.importorskip("cuda.bindings", reason="needs cuda-python (pip install cuda-python) and an NVIDIA GPU")

from export.engine.build import build_engine  # noqa: E402
from export.parity import compare_outputs  # noqa: E402
from export.scenes import draw_scene  # noqa: E402
from export.precision.verdict import FLOAT_GATE, INT8_GATE  # noqa: E402
from runtime.backends.tensorrt import TensorRTRunner  # noqa: E402
from pspcore.errors import InputError  # noqa: E402
from pspcore.engine_file import sidecar_path  # noqa: E402
from tests.export.scenes import SIZE, scene_batch, separating_classifier  # noqa: E402

_reason = TensorRTRunner.unavailable_reason()
if _reason:
    pytest.skip(_reason, allow_module_level=True)


@pytest.fixture(scope="module")
def scene_model(tiny_model, tiny_info, tmp_path_factory):
    from export.onnx.exporter import export_onnx

    model = separating_classifier(tiny_model, scene_batch(tiny_info, seed=50))
    path = tmp_path_factory.mktemp("gpu") / "scene.onnx"
    export_onnx(model, tiny_info, path, size=SIZE)
    return path, model, tiny_info


@pytest.fixture(scope="module")
def calib_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    paths = [folder / f"{i}.png" for i in range(8)]
    for i, path in enumerate(paths):
        cv2.imwrite(str(path), draw_scene(80, 96 + 8 * i, seed=i))
    return paths


def _reference(model, batch):
    with torch.no_grad():
        return model(torch.from_numpy(batch)).numpy()


@pytest.mark.parametrize("precision,max_rel,min_agreement", [
    ("fp32", 1e-4, 0.9999), ("fp16", 1e-2, FLOAT_GATE), ("int8", None, INT8_GATE)])
def test_engine_parity(scene_model, calib_images, tmp_path, precision, max_rel, min_agreement):
    if precision != "fp32":  # only the conversions need ModelOpt: FP32 engines and CUDA graphs run without it
        pytest.importorskip("modelopt.onnx", reason="FP16/INT8 conversion needs NVIDIA ModelOpt")
    path, model, info = scene_model
    engine = tmp_path / f"m.{precision}.engine"
    result = build_engine(path, engine, precision=None if precision == "fp32" else precision, batch="1:2:4",
                          calib_images=calib_images, timing_cache=tmp_path / "timing.cache")
    assert result.precision == precision and (tmp_path / "timing.cache").exists()
    batch = scene_batch(info)
    with TensorRTRunner(engine) as runner:
        report = compare_outputs(_reference(model, batch), runner.infer(batch))
        timing = runner.last_timing
    print(f"TensorRT {precision} vs PyTorch FP32: {report.describe()}")
    assert report.ok(max_rel=max_rel or float("inf"), min_agreement=min_agreement), report.describe()
    if precision != "fp32":  # the gate of the verified conversion: strict agreement, no near-tie excuse
        assert report.argmax_agreement >= min_agreement, report.describe()
    assert timing.h2d_ms > 0 and timing.compute_ms > 0 and timing.d2h_ms > 0


def test_dynamic_batch_cuda_graph_and_buffer_reuse(scene_model, tmp_path):
    """Every call is judged against PyTorch on that call's own input: a second call on new images of the
    same shape (a CUDA graph replayed on them) must give their answer, not the previous one's."""
    path, model, info = scene_model
    engine = tmp_path / "m.engine"
    build_engine(path, engine, batch="1:2:4")
    batch = scene_batch(info, count=6)  # more than the profile's max: runs in chunks
    fresh = scene_batch(info, count=6, seed=300)
    expected, expected_fresh = _reference(model, batch), _reference(model, fresh)
    with TensorRTRunner(engine) as plain, TensorRTRunner(engine, cuda_graphs=True) as graph:
        for runner in (plain, graph):
            for images, wanted in ((batch, expected), (fresh, expected_fresh), (batch[:2], expected[:2]),
                                   (fresh[:2], expected_fresh[:2])):
                report = compare_outputs(wanted, runner.infer(images))
                assert report.ok(), f"{runner.describe()}: {report.describe()}"
        assert graph.graph_launches >= 4 and not graph.notes, graph.notes  # replayed, not launched directly
        address = plain._buffers[plain._input].device
        assert compare_outputs(expected[:1], plain.infer(batch[:1])).ok()  # smaller shape: same buffers
        assert plain._buffers[plain._input].device == address


def test_engine_for_another_gpu_is_refused(scene_model, tmp_path):
    engine = tmp_path / "m.engine"
    build_engine(scene_model[0], engine)
    sidecar = sidecar_path(engine)
    data = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**data, "gpu_name": "NVIDIA Imaginary 9000", "compute_capability": "99.0"}))
    with pytest.raises(InputError, match="GPU NVIDIA Imaginary 9000"):
        TensorRTRunner(engine).activate()
