"""The ONNX Runtime TensorRT provider's optimisation profile and the runner's InputSpec agree: what the runner
accepts is what the profile covers, so a batch or size outside it never reaches the provider (which would fail
at setInputShape on a GPU). No GPU needed: the profile and spec functions are plain Python."""
from __future__ import annotations

import numpy as np
import pytest

from pspcore.errors import InputError
from pspcore.runner import InputSpec, Runner
from runtime.backends.onnxruntime import profile_input_spec, tensorrt_profile

from tests.runtime.conftest import tiny_info


class RecordingRunner(Runner):
    """Stands in for the provider: records every batch shape it is handed."""

    def __init__(self, spec: InputSpec):
        super().__init__("m.onnx")
        self.input_spec = spec
        self.seen: list[tuple[int, ...]] = []

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        self.seen.append(batch.shape)
        return np.zeros((len(batch), 4, *batch.shape[2:]), np.float32)


def test_profile_is_tuned_for_batch_1_and_covers_batch_1_to_max():
    options, _ = tensorrt_profile("image", ["N", 3, "H", "W"], tiny_info(size=(65, 97)), 8)
    assert options == {"trt_profile_min_shapes": "image:1x3x65x97", "trt_profile_opt_shapes": "image:1x3x65x97",
                       "trt_profile_max_shapes": "image:8x3x65x97"}


def test_spec_is_narrowed_to_the_profile():
    options, _ = tensorrt_profile("image", ["N", 3, "H", "W"], tiny_info(size=(65, 97)), 8)
    spec = profile_input_spec(InputSpec(size=None), options)
    assert (spec.size, spec.min_batch, spec.max_batch, spec.fixed_batch) == ((65, 97), 1, 8, None)
    fixed = profile_input_spec(InputSpec(size=(65, 97)), tensorrt_profile("x", ["N", 3, 65, 97], tiny_info(), 4)[0])
    assert (fixed.size, fixed.max_batch) == ((65, 97), 4)
    # A fixed-shape model gets no profile and keeps its own spec; so does a dynamic one without a recorded size.
    assert profile_input_spec(InputSpec(size=(32, 32), fixed_batch=2), {}) == InputSpec(size=(32, 32), fixed_batch=2)
    bare, _ = tensorrt_profile("x", ["N", 3, "H", "W"], tiny_info(size=None), 4)
    assert profile_input_spec(InputSpec(size=None), bare) == InputSpec(size=None)


def test_a_range_of_sizes_becomes_size_bounds():
    options = {"trt_profile_min_shapes": "in:put:1x3x33x33", "trt_profile_opt_shapes": "in:put:1x3x65x65",
               "trt_profile_max_shapes": "in:put:4x3x129x129"}  # a name may hold a colon: split on the last
    spec = profile_input_spec(InputSpec(size=None), options)
    assert (spec.size, spec.min_size, spec.max_size, spec.max_batch) == (None, (33, 33), (129, 129), 4)


def test_requests_outside_the_profile_never_reach_the_provider():
    options, _ = tensorrt_profile("image", ["N", 3, "H", "W"], tiny_info(size=(65, 97)), 8)
    runner = RecordingRunner(profile_input_spec(InputSpec(size=None), options))
    out = runner.infer(np.zeros((16, 3, 65, 97), np.float32))  # --batch 16: two calls of 8
    assert out.shape == (16, 4, 65, 97) and runner.seen == [(8, 3, 65, 97), (8, 3, 65, 97)]
    runner.seen.clear()
    with pytest.raises(InputError, match="m.onnx takes 65x97 inputs, got 129x129"):
        runner.infer(np.zeros((1, 3, 129, 129), np.float32))
    assert runner.seen == []


def test_runner_narrows_its_spec_only_while_the_tensorrt_provider_runs(tmp_path):
    """The runner wiring: with the TensorRT provider in the session the spec is the profile's; a session that
    dropped it (no GPU) keeps the model's own. The provider cannot run here, so the session's choice is set."""
    from runtime.backends.onnxruntime import OnnxRuntimeRunner

    from tests.runtime.conftest import make_onnx

    path = make_onnx(tmp_path / "m.onnx", dynamic_shape=True, info=tiny_info(size=(65, 97), dynamic_shape=True))
    runner = OnnxRuntimeRunner(path, providers="cpu")
    runner.activate()
    assert runner.input_spec.size is None and runner.input_spec.max_batch is None
    runner.loader.profile, _ = tensorrt_profile("image", ["N", 3, "H", "W"], runner.info, 8)
    assert runner._read_input_spec().size is None  # CPU only: the profile is not in use
    runner.providers = ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    spec = runner._read_input_spec()
    assert (spec.size, spec.min_batch, spec.max_batch) == ((65, 97), 1, 8)


@pytest.mark.parametrize("precision,expected", [("fp32", {}), ("fp16", {"trt_fp16_enable": True}),
                                                ("int8", {"trt_int8_enable": True}), ("bf16", {})])
def test_the_tensorrt_provider_gets_the_builder_flag_of_the_model_precision(tmp_path, monkeypatch, precision,
                                                                             expected):
    """onnxruntime-gpu 1.31's TensorRT provider builds weakly typed TensorRT 10 networks: an FP16 or Q/DQ model
    needs trt_fp16_enable / trt_int8_enable, else TensorRT refuses its layers. Read from the model's metadata and
    passed with the session's TensorRT options (the provider cannot run here: the session records them)."""
    import onnxruntime

    from runtime.backends.onnxruntime import SessionFromOnnx
    from tests.runtime.conftest import make_onnx

    path = make_onnx(tmp_path / "m.onnx", info=tiny_info(precision=precision))
    real, chosen = onnxruntime.InferenceSession, {}

    def recording(model, options=None, providers=None, **kwargs):
        if providers and isinstance(providers[0], tuple):
            chosen.update(dict(providers))
            providers = ["CPUExecutionProvider"]
        return real(model, options, providers=providers, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording)
    loader = SessionFromOnnx(path, providers="cpu")
    loader.providers = ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    loader()
    flags = {k: v for k, v in chosen["TensorrtExecutionProvider"].items()
             if k in ("trt_fp16_enable", "trt_int8_enable")}
    assert flags == expected
    assert "trt_engine_cache_enable" in chosen["TensorrtExecutionProvider"] and chosen["CPUExecutionProvider"] == {}
