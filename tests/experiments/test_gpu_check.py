"""experiments/gpu_check.py on a CPU: the no-GPU report, the PyTorch GPU path on a stand-in device, the
TensorRT part and its device checks on the CUDA/TensorRT stand-in, and the parity gates."""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from experiments.gpu_check import GpuCheckConfig, check_inputs, main, run_gpu_check, verdict
from experiments.gpu_tensorrt import device_checks, drawn_calibration, run_tensorrt_check
from experiments.gpu_torch import ERROR, FAILED, PASSED, SKIPPED, VARIANTS, TorchTarget, passes
from export.parity import ParityReport, compare_outputs
from pspcore.model_info import ModelInfo
from tests.runtime.test_tensorrt import fake_gpu  # noqa: F401  (a pytest fixture)

torch = pytest.importorskip("torch")


def _report(max_rel: float, agreement: float) -> ParityReport:
    return ParityReport(max_abs=max_rel, max_rel_to_range=max_rel, argmax_agreement=agreement,
                        tie_agreement=agreement, logit_range=1.0, tie_margin=0.0, pixels=100)


def test_help_lists_the_options():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for option in ("--checkpoint", "--onnx", "--calib-images", "--precision", "--cuda-graph", "--output"):
        assert option in result.output


def test_at_most_one_model(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    result = CliRunner().invoke(main, ["--checkpoint", str(model), "--onnx", str(model), "-o",
                                       str(tmp_path / "r.json")])
    assert result.exit_code == 2 and "at most one of --checkpoint or --onnx" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report of a machine without a GPU")
def test_without_a_gpu_one_line_and_the_report(tmp_path):
    out = tmp_path / "gpu.json"
    result = CliRunner().invoke(main, ["-o", str(out)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("no GPU: ")]
    assert len(lines) == 1 and "sees no CUDA device" in lines[0]
    report = json.loads(out.read_text())
    assert report["passed"] is None and report["no_gpu"] and report["torch"]["skipped"]
    if importlib.util.find_spec("tensorrt") is None:
        assert "pip install tensorrt" in report["tensorrt"]["skipped"]


def test_parity_targets_per_precision():
    assert passes("fp32", _report(5e-5, 1.0)) and not passes("fp32", _report(5e-4, 1.0))
    assert passes("fp16", _report(0.3, 0.996)) and not passes("fp16", _report(0.0, 0.99))
    assert passes("bf16", _report(0.5, 0.985)) and not passes("bf16", _report(0.0, 0.975))
    assert passes("int8", _report(0.5, 0.985)) and not passes("int8", _report(0.0, 0.975))


def test_garbage_output_fails_every_precision():
    """An output of zeros: near-ties excuse every pixel (the error is the whole logit range), and strict
    agreement must still fail it."""
    reference = np.random.default_rng(0).standard_normal((2, 5, 8, 8)).astype(np.float32)
    zeros = compare_outputs(reference, np.zeros_like(reference))
    assert zeros.tie_agreement == 1.0
    assert not any(passes(precision, zeros) for precision in ("fp32", "fp16", "bf16", "int8"))


def test_verdict_needs_a_pass_and_no_failure():
    assert verdict([PASSED, SKIPPED])
    assert not verdict([SKIPPED]) and not verdict([])  # nothing checked is not a pass
    assert not verdict([PASSED, FAILED]) and not verdict([PASSED, ERROR])


def test_check_inputs_and_drawn_calibration(tmp_path):
    batch = check_inputs(ModelInfo(), (33, 49), 4)
    assert batch.shape == (4, 3, 33, 49) and batch.dtype == np.float32
    assert not np.array_equal(batch[0], batch[1])
    assert not np.array_equal(batch, check_inputs(ModelInfo(), (33, 49), 4, seed=2000))
    paths = drawn_calibration(tmp_path / "calib", (33, 49), count=3)
    assert [cv2.imread(str(p)).shape for p in paths] == [(33, 49, 3)] * 3


# ---- the PyTorch GPU path on a stand-in device: the CPU, with an eager stand-in for torch.cuda.CUDAGraph ----

class EagerGraph:
    """torch.cuda.CUDAGraph's contract on the CPU: the batch is copied into a static input and the captured
    forward reruns on it."""

    @staticmethod
    def supports(device) -> bool:
        return True

    @staticmethod
    def resources(device) -> tuple:
        return None, None  # no stream or memory pool on the CPU

    def __init__(self, forward, example, stream, pool):
        self.forward, self.static_input = forward, example.clone()
        self.static_output = forward(self.static_input)

    def __call__(self, batch):
        self.static_input.copy_(batch)
        self.static_output = self.forward(self.static_input)
        return self.static_output


class StaleGraph(EagerGraph):
    """A graph that is never re-run: every call returns what the capture computed."""

    def __call__(self, batch):
        self.static_input.copy_(batch)
        return self.static_output


class BrokenGraph(EagerGraph):
    def __init__(self, forward, example, stream, pool):
        raise RuntimeError("operation not permitted when stream is capturing")


def _torch_config(tmp_path, **changes):
    return GpuCheckConfig(arch="pspnet18-tiny", num_classes=4, size=(33, 33), num_inputs=2, duration_s=0.01,
                          matmul_n=32, min_iters=2, workdir=tmp_path, **changes)


GRAPHS = "fp16 channels_last cuda graphs"


@pytest.mark.slow  # every variant, on the tiny network
def test_torch_path_on_a_stand_in_device(tmp_path):
    """Every variant measured and gated against CPU FP32 on a stand-in GPU; the report is JSON as it is."""
    target = TorchTarget("cpu", "Stand-in GPU", lambda: None, EagerGraph)
    lines = []
    report = run_gpu_check(_torch_config(tmp_path), log=lines.append, target=target)
    json.dumps(report)
    checks = {c["variant"]["name"]: c for c in report["torch"]["checks"]}
    assert list(checks) == [v.name for v in VARIANTS]
    assert all(c["status"] == PASSED for c in checks.values()), [c["detail"] for c in checks.values()]
    assert checks[GRAPHS]["replay"]["passed"]
    assert report["passed"] is True
    assert report["gpu"] == "Stand-in GPU" and report["torch"]["reference"] == "PyTorch FP32 on the CPU"
    measured = checks["fp16"]
    assert measured["latency_ms"]["median"] > 0 and measured["achieved_tflops"] > 0
    assert 0 < measured["fraction_of_bf16_matmul"] and report["torch"]["bf16_matmul_tflops"] > 0
    if importlib.util.find_spec("tensorrt") is None:
        assert "pip install tensorrt" in report["tensorrt"]["skipped"]
        assert any(line.startswith("skipped TensorRT: ") for line in lines)


@pytest.mark.parametrize("graph,expected", [(StaleGraph, FAILED), (BrokenGraph, ERROR)])
def test_a_bad_cuda_graph_fails_and_the_rest_is_still_reported(tmp_path, graph, expected):
    """A graph that never re-runs gives the captured input's answer for a new input: the replay check
    against eager on that input fails it. A variant that breaks is reported as an error, after which the
    others still run (N5)."""
    config = _torch_config(tmp_path, torch_variants=(GRAPHS, "fp32"))
    target = TorchTarget("cpu", "Stand-in GPU", lambda: None, graph)
    report = run_gpu_check(config, log=lambda line: None, target=target)
    checks = {c["variant"]["name"]: c for c in report["torch"]["checks"]}
    assert checks[GRAPHS]["status"] == expected, checks[GRAPHS]["detail"]
    assert checks["fp32"]["status"] == PASSED and checks["fp32"]["latency_ms"]
    assert report["passed"] is False


# ---- the TensorRT part on the CUDA/TensorRT stand-in (tests/runtime/fake_cuda.py) ----

def _fake_expected(x):
    return np.concatenate([x[:, :1], -x[:, :1]], axis=1)


def _batches():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((2, 3, 65, 65)).astype(np.float32) for _ in range(2)]


def test_device_checks_on_the_cuda_stand_in(fake_gpu, monkeypatch):
    """They pass on correct code; each can fail: a sidecar naming another GPU than the independent source
    says, a CUDA graph that cannot be captured; one GPU skips (not passes) the two-GPU check (N6)."""
    import pspcore.engine_file

    from tests.pspcore.test_engine_file import BUILT

    monkeypatch.setattr(pspcore.engine_file, "current_platform", lambda device=0: BUILT)
    engine, (first, fresh) = fake_gpu.make_engine(), _batches()
    config = GpuCheckConfig(onnx=engine)
    statuses = [r["status"] for r in device_checks(config, engine, first, fresh, "NVIDIA L4")]
    assert statuses == [PASSED] * 4
    results = device_checks(config, engine, first, fresh, "NVIDIA H100 80GB HBM3")
    assert results[0]["status"] == FAILED and "NVIDIA H100" in results[0]["detail"]
    fake_gpu.cudart.capture_fails = True
    assert [r["status"] for r in device_checks(config, engine, first, fresh, "NVIDIA L4")][2] == FAILED
    fake_gpu.cudart.capture_fails, fake_gpu.cudart.devices = False, 1
    results = device_checks(config, engine, first, fresh, "NVIDIA L4")
    assert [r["status"] for r in results] == [PASSED, PASSED, PASSED, SKIPPED]
    fake_gpu.assert_nothing_left()


def test_every_precision_reported_when_one_fails_its_build(fake_gpu, monkeypatch, tmp_path):
    """A build that fails is that precision's result; the others are still built, judged and measured (N5)."""
    import experiments.gpu_tensorrt as gpu_tensorrt
    import pspcore.engine_file

    from pspcore.errors import PSPError
    from tests.pspcore.test_engine_file import BUILT

    monkeypatch.setattr(pspcore.engine_file, "current_platform", lambda device=0: BUILT)

    def build(config, precision, onnx_path, work):
        if precision == "fp16":
            raise PSPError("TensorRT could not build the engine")
        return fake_gpu.make_engine(f"m.{precision}.engine"), 1.0, []

    monkeypatch.setattr(gpu_tensorrt, "build_engine_for", build)
    first, fresh = _batches()
    config = GpuCheckConfig(onnx=tmp_path / "m.onnx", num_inputs=2, duration_s=0.01, workdir=tmp_path / "work")
    report = run_tensorrt_check(config, tmp_path / "m.onnx", ModelInfo(), first, fresh, _fake_expected(fresh),
                                "NVIDIA L4", log=lambda line: None)
    json.dumps(report)
    assert [(c["precision"], c["status"]) for c in report["checks"]] == [
        ("fp32", PASSED), ("fp16", ERROR), ("int8", PASSED)]
    assert "could not build" in report["checks"][1]["detail"]
    assert {r["label"] for r in report["latency"]["results"]} == {"tensorrt fp32", "tensorrt int8"}
    assert len(report["device_checks"]) == 4
    # judged against the expected output, not against themselves: a wrong expectation fails them
    wrong = run_tensorrt_check(config, tmp_path / "m.onnx", ModelInfo(), first, fresh, -_fake_expected(fresh),
                               "NVIDIA L4", log=lambda line: None)
    assert [c["status"] for c in wrong["checks"]] == [FAILED, ERROR, FAILED]
    fake_gpu.assert_nothing_left()


def test_a_wrongly_loading_refused_engine_fails_and_is_released(fake_gpu, monkeypatch):
    """If the runner loaded an engine whose sidecar names another GPU, the check fails and the runner it
    loaded is released again, not left holding the GPU for the rest of the check."""
    import pspcore.engine_file
    import runtime.backends.tensorrt as trt_module

    from tests.pspcore.test_engine_file import BUILT

    monkeypatch.setattr(pspcore.engine_file, "current_platform", lambda device=0: BUILT)
    monkeypatch.setattr(trt_module, "check_compatible", lambda built, here, name: None)
    engine, (first, fresh) = fake_gpu.make_engine(), _batches()
    results = device_checks(GpuCheckConfig(onnx=engine), engine, first, fresh, "NVIDIA L4")
    assert results[1]["status"] == FAILED and results[1]["detail"] == "loaded it"
    fake_gpu.assert_nothing_left()


def test_results_gathered_before_a_later_step_raises_are_kept(fake_gpu, monkeypatch, tmp_path):
    """A step after the per-variant loops that raises (the matmul rate, latency, a device check) is reported
    as an error beside every result gathered before it, and fails the verdict."""
    import experiments.gpu_tensorrt as gpu_tensorrt
    import experiments.gpu_torch as gpu_torch
    import pspcore.engine_file

    from tests.pspcore.test_engine_file import BUILT

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gpu_torch, "bf16_matmul_tflops", broken)
    config = _torch_config(tmp_path, torch_variants=("fp32",))
    report = run_gpu_check(config, log=lambda line: None, target=TorchTarget("cpu", "Stand-in GPU", lambda: None,
                                                                             EagerGraph))
    assert report["torch"]["checks"][0]["status"] == PASSED and report["torch"]["latency"]
    assert report["torch"]["errors"] == ["bf16 matmul rate: RuntimeError: CUDA error: an illegal memory access "
                                         "was encountered"]
    assert report["passed"] is False and "TF32 off" in report["torch"]["tf32"]

    monkeypatch.setattr(pspcore.engine_file, "current_platform", lambda device=0: BUILT)
    monkeypatch.setattr(gpu_tensorrt, "build_engine_for",
                        lambda config, precision, onnx_path, work: (fake_gpu.make_engine(), 1.0, []))
    monkeypatch.setattr(gpu_tensorrt, "measure_latency", broken)
    monkeypatch.setattr(gpu_tensorrt, "two_gpu_check", broken)
    first, fresh = _batches()
    config = GpuCheckConfig(onnx=tmp_path / "m.onnx", precisions=("fp32",), duration_s=0.01,
                            workdir=tmp_path / "work")
    part = run_tensorrt_check(config, tmp_path / "m.onnx", ModelInfo(), first, fresh, _fake_expected(fresh),
                              "NVIDIA L4", log=lambda line: None)
    assert part["checks"][0]["status"] == PASSED and part["latency"] is None
    assert part["errors"] == ["latency: RuntimeError: CUDA error: an illegal memory access was encountered"]
    assert [d["status"] for d in part["device_checks"]] == [PASSED, PASSED, PASSED, ERROR]
    fake_gpu.assert_nothing_left()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report of a machine without a GPU")
def test_quick_without_a_gpu_writes_its_report_with_one_line(tmp_path):
    out = tmp_path / "quick.json"
    result = CliRunner().invoke(main, ["--quick", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert [line for line in result.output.splitlines() if line.strip()] == [
        line for line in result.output.splitlines() if line.startswith("no GPU: ")]
    assert len(result.output.strip().splitlines()) == 1
    report = json.loads(out.read_text())
    assert report["passed"] is None and "sees no CUDA device" in report["no_gpu"]
    assert report["tensorrt"]["skipped"] == "not checked (PyTorch only)" and "quick" not in report


@pytest.mark.slow  # the whole quick run, on the stand-in device
def test_quick_run_on_a_stand_in_device(tmp_path):
    """Every part of the quick run executes; what needs CUDA says so (skipped), the recapture check runs: two
    alternating shapes, two graphs. A graph that never re-runs fails it."""
    from experiments.gpu_quick import run_quick

    config = _torch_config(tmp_path / "work", torch_variants=("fp32", GRAPHS))
    report = run_quick(config, log=lambda line: None, target=TorchTarget("cpu", "Stand-in GPU", lambda: None,
                                                                         EagerGraph))
    json.dumps(report)
    checks = {c["check"]: c for c in report["quick"]}
    recapture = checks["two alternating shapes are captured once each"]
    assert recapture["status"] == PASSED and recapture["graphs"] == 2, recapture["detail"]
    assert len(recapture["capture_ms"]) == 2
    assert {c["status"] for name, c in checks.items() if c is not recapture} == {SKIPPED}
    assert report["passed"] is True and report["torch"]["checks"][0]["status"] == PASSED
    from experiments.gpu_quick import recapture_cost

    checkpoint = report["model"]["checkpoint"]
    stale = recapture_cost(recapture["check"], TorchTarget("cpu", "Stand-in GPU", lambda: None, StaleGraph),
                           Path(checkpoint), rounds=2)
    assert stale["status"] == FAILED, stale["detail"]
