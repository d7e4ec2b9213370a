"""experiments/gpu_check.py's CPU-checkable parts: options, the missing-TensorRT message, parity verdicts."""
import importlib.util

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from experiments.gpu_check import check_inputs, drawn_calibration, main, passes
from export.parity import ParityReport, compare_outputs
from pspcore.model_info import ModelInfo
from tests.runtime.test_tensorrt import fake_gpu  # noqa: F401  (a pytest fixture)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


def _report(max_rel: float, agreement: float) -> ParityReport:
    return ParityReport(max_abs=max_rel, max_rel_to_range=max_rel, argmax_agreement=agreement,
                        tie_agreement=agreement, logit_range=1.0, tie_margin=0.0, pixels=100)


def test_help_lists_the_options():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for option in ("--checkpoint", "--onnx", "--calib-images", "--precision", "--cuda-graph", "--output"):
        assert option in result.output


def test_needs_exactly_one_model():
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 2 and "exactly one of --checkpoint or --onnx" in result.output


@pytest.mark.skipif(HAVE_TRT, reason="checks the message shown where TensorRT is not installed")
def test_without_tensorrt_says_how_to_install(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    result = CliRunner().invoke(main, ["--onnx", str(model)])
    assert result.exit_code == 1 and "pip install tensorrt" in result.output


def test_parity_targets_per_precision():
    assert passes("fp32", _report(5e-5, 1.0)) and not passes("fp32", _report(5e-4, 1.0))
    assert passes("fp16", _report(0.3, 0.996)) and not passes("fp16", _report(0.0, 0.99))
    assert passes("int8", _report(0.5, 0.985)) and not passes("int8", _report(0.0, 0.975))


def test_garbage_engine_output_fails_every_precision():
    """An engine that outputs zeros: near-ties excuse every pixel (the error is the whole logit range), and
    strict agreement must still fail it."""
    reference = np.random.default_rng(0).standard_normal((2, 5, 8, 8)).astype(np.float32)
    zeros = compare_outputs(reference, np.zeros_like(reference))
    assert zeros.tie_agreement == 1.0
    assert not any(passes(precision, zeros) for precision in ("fp32", "fp16", "int8"))


def test_check_inputs_and_drawn_calibration(tmp_path):
    batch = check_inputs(ModelInfo(), (33, 49), 4)
    assert batch.shape == (4, 3, 33, 49) and batch.dtype == np.float32
    assert not np.array_equal(batch[0], batch[1])
    paths = drawn_calibration(tmp_path / "calib", (33, 49), count=3)
    assert [cv2.imread(str(p)).shape for p in paths] == [(33, 49, 3)] * 3


def test_device_checks_on_the_cuda_stand_in(fake_gpu, monkeypatch):
    """The GPU script's device checks, run against the CUDA/TensorRT stand-in: they pass on correct code and
    a CUDA graph that cannot be captured fails its check (on a GPU machine they run for real)."""
    import pspcore.engine_file
    from experiments.gpu_check import GpuCheckConfig, device_checks
    from tests.pspcore.test_engine_file import BUILT

    cudart, make_engine = fake_gpu
    monkeypatch.setattr(pspcore.engine_file, "current_platform", lambda device=0: BUILT)
    engine = make_engine()
    x = np.random.default_rng(0).standard_normal((2, 3, 65, 65)).astype(np.float32)
    expected = np.concatenate([x[:, :1], -x[:, :1]], axis=1)
    results = device_checks(GpuCheckConfig(onnx=engine), engine, x, expected)
    assert [r["passed"] for r in results] == [True, True, True], results
    assert "GPUs 0 and 1" in results[2]["detail"]
    cudart.capture_fails = True
    assert [r["passed"] for r in device_checks(GpuCheckConfig(onnx=engine), engine, x, expected)] == [True, False, True]
