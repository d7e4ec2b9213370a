"""What the OpenVINO runner asks the CPU plugin for, on every CPU class: an FP32 model is compiled with the f32
inference-precision hint passed explicitly. On a CPU without bf16 a missing hint changes nothing observable (the
plugin runs f32 anyway), so the compiled model's own property cannot show it here; the request itself can."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tests.runtime.conftest import make_onnx


@pytest.fixture
def compile_calls(monkeypatch):
    """The real OpenVINO, with every compile_model call's (device, config) recorded."""
    ov = pytest.importorskip("openvino", reason="openvino is not installed (pip install '.[openvino]')")
    import runtime.backends.openvino as backend

    calls = []

    class RecordingCore(ov.Core):
        def compile_model(self, model, device=None, config=None):
            calls.append((device, {str(k): str(v) for k, v in (config or {}).items()}))
            return super().compile_model(model, device, config or {})

    real = backend.import_openvino()
    monkeypatch.setattr(backend, "import_openvino",
                        lambda: SimpleNamespace(**{**{n: getattr(real, n) for n in dir(real)
                                                             if not n.startswith("__")}, "Core": RecordingCore}))
    return calls


def _hint(config: dict) -> str | None:
    return next((v for k, v in config.items() if k == "INFERENCE_PRECISION_HINT"), None)


def test_an_fp32_model_is_compiled_with_the_f32_hint_asked_for(compile_calls, tmp_path):
    from runtime.backends.openvino import OpenVINORunner

    model = make_onnx(tmp_path / "m.onnx")
    with OpenVINORunner(model) as runner:
        runner.infer(np.zeros((1, 3, 32, 32), np.float32))
    assert [device for device, _ in compile_calls] == ["CPU"]
    assert _hint(compile_calls[0][1]) in ("f32", "float32"), compile_calls


def test_the_bf16_option_is_asked_for_as_bf16(compile_calls, tmp_path):
    from runtime.backends.openvino import OpenVINORunner

    with OpenVINORunner(make_onnx(tmp_path / "m.onnx"), precision="bf16") as runner:
        runner.infer(np.zeros((1, 3, 32, 32), np.float32))
    assert _hint(compile_calls[0][1]) in ("bf16", "bfloat16"), compile_calls
