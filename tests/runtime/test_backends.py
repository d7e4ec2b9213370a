"""Backend registry, auto resolution, the ONNX Runtime runner and model-info reading, on torch-free models."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pspcore.registry import available_backends, create_runner, resolve_backend
from pspcore.errors import BackendUnavailable, InputError, PSPError
from pspcore.engine_file import EngineSidecar, Platform, sidecar_path, write_sidecar
from pspcore.model_reader import read_model_info

from tests.runtime.conftest import make_onnx, tiny_info


def test_available_backends_reports_every_backend_with_a_reason_or_none():
    status = available_backends()
    assert set(status) == {"onnxruntime", "openvino", "tensorrt", "torch", "triton"}
    assert status["onnxruntime"] is None
    assert all(v is None or (isinstance(v, str) and v) for v in status.values())


@pytest.mark.parametrize("path, expected", [("m.onnx", "onnxruntime"), ("m.engine", "tensorrt"),
                                            ("m.plan", "tensorrt"), ("ckpt.pth", "torch"),
                                            ("grpc://localhost:8001/pspnet", "triton")])
def test_auto_resolution_by_model_kind(path, expected):
    assert resolve_backend("auto", path)[0] == expected


def test_unknown_backend_is_an_input_error(tiny_model):
    with pytest.raises(InputError, match="unknown backend"):
        create_runner("nonesuch", tiny_model)


def test_auto_says_which_backend_it_picked(tiny_model):
    runner = create_runner("auto", tiny_model)
    assert runner.name == "onnxruntime"
    assert runner.notes[0].startswith("backend auto: onnxruntime for") and ".onnx" in runner.notes[0]
    with runner:
        assert runner.describe().startswith("onnxruntime[") and "cpu" in runner.describe()


def test_option_a_backend_does_not_take_is_refused(tiny_model):
    with pytest.raises(InputError, match="does not take --shm"):
        create_runner("onnxruntime", tiny_model, shm=True)


def test_runner_loads_in_activate_and_releases_in_deactivate(tiny_model):
    runner = create_runner("onnxruntime", tiny_model)
    assert not runner.is_active and runner._session is None  # constructing opens nothing
    with runner:
        assert runner.is_active and runner.session is not None and runner.input_spec.size == (32, 32)
    assert not runner.is_active and runner._session is None
    with pytest.raises(PSPError, match="not active"):
        runner.session
    out = runner.infer(np.zeros((1, 3, 32, 32), np.float32))  # infer activates again
    assert out.shape == (1, 4, 32, 32) and runner.is_active
    runner.deactivate()
    runner.deactivate()  # idempotent


def test_auto_prefers_a_real_claim_over_a_catch_all(tmp_path):
    assert resolve_backend("auto", tmp_path / "m.engine")[0] == "tensorrt"  # even where TensorRT is missing
    assert resolve_backend("auto", tmp_path / "m.pth")[0] == "torch"
    assert resolve_backend("auto", "grpc://localhost:8001/pspnet")[0] == "triton"
    assert resolve_backend("auto", tmp_path / "m.bin")[0] == "onnxruntime"  # says itself what it cannot read


def test_a_backend_registered_in_code_is_found_and_can_win_auto(tiny_model):
    from pspcore.registry import register_backend, unregister_backend
    from pspcore.runner import Runner

    @register_backend
    class Better(Runner):
        name = "better"

        @classmethod
        def auto_priority(cls, model_path):
            return 50 if model_path.endswith(".onnx") else None

        def run_batch(self, batch):
            return batch

    try:
        assert resolve_backend("auto", tiny_model)[0] == "better"
        assert available_backends()["better"] is None
    finally:
        unregister_backend("better")
    assert resolve_backend("auto", tiny_model)[0] == "onnxruntime"


def test_onnxruntime_runner_reads_metadata_and_shape(tiny_model):
    with create_runner("onnxruntime", tiny_model, threads=1) as runner:
        assert runner.info == tiny_info(output="logits")
        assert runner.input_spec.size == (32, 32) and runner.input_spec.fixed_batch is None
        out = runner.infer(np.zeros((3, 3, 32, 32), np.float32))
    assert out.shape == (3, 4, 32, 32) and out.dtype == np.float32
    assert runner.last_timing.compute_ms > 0


def test_fixed_batch_model_takes_any_batch(onnx_dir):
    model = make_onnx(onnx_dir / "b2.onnx", batch=2)
    with create_runner("onnxruntime", model) as runner:
        assert runner.input_spec.fixed_batch == 2
        x = np.random.default_rng(1).normal(size=(5, 3, 32, 32)).astype(np.float32)
        whole = runner.infer(x)
        assert whole.shape == (5, 4, 32, 32)
        np.testing.assert_allclose(whole[4:], runner.infer(x[4:]), rtol=1e-6)


def test_wrong_input_size_is_a_clear_error(tiny_model):
    runner = create_runner("onnxruntime", tiny_model)
    with pytest.raises(InputError, match="takes 32x32 inputs, got 16x16"):
        runner.infer(np.zeros((1, 3, 16, 16), np.float32))


def test_missing_provider_is_backend_unavailable(tiny_model):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        create_runner("onnxruntime", tiny_model, providers="cuda")


def test_model_without_metadata_gets_defaults_and_one_notice(onnx_dir, capsys):
    model = make_onnx(onnx_dir / "foreign.onnx", num_classes=5, info=None)
    info = read_model_info(model)
    runner = create_runner("onnxruntime", model)
    runner.activate()
    assert info.num_classes == 5 and len(info.palette) == 5 and info.input_size == (32, 32)
    assert runner.info == info
    assert capsys.readouterr().err.count("carries no pspnet metadata") == 1


def test_labels_model_without_metadata(onnx_dir):
    info = read_model_info(make_onnx(onnx_dir / "labels.onnx", output="labels", info=None))
    assert info.output == "labels" and len(info.palette) == 256


def test_dynamic_shape_model_has_no_fixed_size(onnx_dir):
    runner = create_runner("onnxruntime", make_onnx(onnx_dir / "dyn.onnx", dynamic_shape=True))
    runner.activate()
    assert runner.input_spec.size is None
    assert runner.infer(np.zeros((1, 3, 20, 28), np.float32)).shape == (1, 4, 20, 28)


def test_engine_sidecar_info(tmp_path, capsys):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    assert read_model_info(engine).num_classes == 0
    assert "no sidecar" in capsys.readouterr().err
    platform = Platform("10.13.3.9", "NVIDIA L4", "8.9")
    write_sidecar(sidecar_path(engine), EngineSidecar(platform, "fp32", {}, "", "", tiny_info()))
    assert read_model_info(engine) == tiny_info()  # one reader of the format: the runner's and this agree
    sidecar_path(engine).write_text(json.dumps({"info": tiny_info().to_dict()}))  # no platform: not valid
    with pytest.raises(InputError, match="not a valid engine sidecar"):
        read_model_info(engine)
    sidecar_path(engine).write_text("{")
    with pytest.raises(InputError, match="not a valid engine sidecar"):
        read_model_info(engine)


def test_bad_model_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="model not found"):
        create_runner("onnxruntime", tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="not a loadable ONNX model"):
        create_runner("auto", junk).activate()
    with pytest.raises(InputError, match="cannot read model info"):
        read_model_info(tmp_path / "weights.bin")


def test_tensorrt_provider_gets_a_profile_for_dynamic_models(tmp_path):
    """Without trt_profile_* shapes the TensorRT provider builds for minutes on the first run and again for
    every new shape; fixed-shape models need none."""
    from runtime.backends.onnxruntime import provider_options, tensorrt_profile

    info = tiny_info(size=(65, 97))
    assert tensorrt_profile("image", [1, 3, 65, 97], info, 8) == ({}, [])
    options, notes = tensorrt_profile("image", ["N", 3, 65, 97], info, 8)
    assert options == {"trt_profile_min_shapes": "image:1x3x65x97", "trt_profile_opt_shapes": "image:1x3x65x97",
                       "trt_profile_max_shapes": "image:8x3x65x97"} and notes == []
    options, notes = tensorrt_profile("x", ["N", 3, "H", "W"], info, 4)
    assert options["trt_profile_max_shapes"] == "x:4x3x65x97" and "recorded input size 65x97" in notes[0]
    assert tensorrt_profile("x", ["N", 3, "H", "W"], info.with_(input_size=None), 4)[0] == {}
    trt = provider_options("TensorrtExecutionProvider", tmp_path / "m.onnx", 1, options)
    assert trt["device_id"] == 1 and trt["trt_engine_cache_enable"] and trt["trt_timing_cache_enable"]
    assert trt["trt_profile_min_shapes"] == "x:1x3x65x97"
    assert provider_options("CUDAExecutionProvider", tmp_path / "m.onnx", 1, options) == {"device_id": 1}
