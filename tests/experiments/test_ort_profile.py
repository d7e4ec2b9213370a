"""ORT op profile: kernel events are totalled per op type and per run, models side by side."""
from __future__ import annotations

from click.testing import CliRunner

from experiments.ort_profile import kernel_times, main, profile_model, summarize
from tests.runtime.conftest import make_onnx


def test_kernel_events_are_totalled_per_op_and_run():
    events = [{"cat": "Session", "name": "model_run", "dur": 999},
              {"cat": "Node", "name": "conv1_fence_before", "dur": 5, "args": {"op_name": "Conv"}},
              {"cat": "Node", "name": "conv1_kernel_time", "dur": 3000, "args": {"op_name": "Conv"}},
              {"cat": "Node", "name": "conv2_kernel_time", "dur": 1000, "args": {"op_name": "Conv"}},
              {"cat": "Node", "name": "mm_kernel_time", "dur": 2000, "args": {"op_name": "MatMul"}}]
    kernels = kernel_times(events)
    assert kernels == [("conv1", "Conv", 3000.0), ("conv2", "Conv", 1000.0), ("mm", "MatMul", 2000.0)]
    profile = summarize("m.onnx", 2, kernels)
    assert profile.by_op == {"Conv": 2.0, "MatMul": 1.0} and list(profile.by_op) == ["Conv", "MatMul"]
    assert profile.per_run_ms == 3.0 and profile.nodes == {"Conv": 2, "MatMul": 1}


def test_profiles_a_real_session(tmp_path):
    static = make_onnx(tmp_path / "static.onnx", size=(24, 24))
    profile = profile_model(static, runs=3, threads=1, size=None)
    # ORT's optimiser may add layout reorders around the one Conv; the Conv itself is always there, once.
    assert profile.nodes["Conv"] == 1 and profile.per_run_ms >= profile.by_op["Conv"] > 0
    dynamic = make_onnx(tmp_path / "dynamic.onnx", dynamic_shape=True)
    result = CliRunner().invoke(main, [str(static), str(dynamic), "--runs", "2", "--size", "16x16"])
    assert result.exit_code == 0, result.output
    assert "static.onnx ms" in result.output and "dynamic.onnx %" in result.output and "all kernels" in result.output
    missing = CliRunner().invoke(main, [str(dynamic)])
    assert missing.exit_code == 2 and "--size" in missing.output
