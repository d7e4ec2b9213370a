"""The machine's limit in psp-bench: a model's operations counted from its graph (exactly, on graphs whose count
is known by hand), the GEMM rates measured on small GEMMs, and each row's fraction of the rate of its kind."""
from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.bench import run_benchmark
from benchmarks.limits import add_limit_fractions
from benchmarks.machine import GemmRate, best_limits, measure_gemm_limits
from benchmarks.model_cost import model_gop
from benchmarks.records import BenchConfig, Candidate
from tests.benchmarks.fakes import write_model
from tests.runtime.conftest import make_onnx

onnx = pytest.importorskip("onnx")


def test_conv_count_of_a_known_graph(tmp_path):
    # a 1x1 conv 3 -> 4 channels at 32x32: 2 x 4 x 3 operations per pixel
    assert model_gop(make_onnx(tmp_path / "m.onnx"), (32, 32)) * 1e9 == pytest.approx(2 * 4 * 3 * 32 * 32)
    # a dynamic-shape model is counted at the size asked for
    dynamic = make_onnx(tmp_path / "d.onnx", dynamic_shape=True)
    assert model_gop(dynamic, (16, 8)) * 1e9 == pytest.approx(2 * 4 * 3 * 16 * 8)


@pytest.mark.slow
def test_pspnet_count_matches_its_layers(tmp_path):
    """A tiny PSPNet: the count is the sum over its convs of 2 x weight size x output pixels (torch hooks),
    plus the pooling MatMuls; garbage (a different size) must not match."""
    torch = pytest.importorskip("torch")
    from export.onnx.exporter import export_onnx
    from pspnet import create_model
    from pspnet.checkpoint import info_for_config

    model = create_model("pspnet18-tiny", num_classes=5, aux=False).eval()
    path = tmp_path / "p.onnx"
    export_onnx(model, info_for_config(model.config), path, size=(65, 65), verify=False)  # counting, not parity
    conv_ops = []
    hooks = [m.register_forward_hook(lambda m, i, o: conv_ops.append(2 * m.weight.numel() * o.shape[2] * o.shape[3]))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 65, 65))
    for hook in hooks:
        hook.remove()
    counted = model_gop(path, (65, 65)) * 1e9
    assert sum(conv_ops) <= counted < 1.01 * sum(conv_ops)  # the pooling MatMuls are a sliver
    assert not sum(conv_ops) <= model_gop(path, (97, 97)) * 1e9 < 1.01 * sum(conv_ops)


def test_openvino_ir_count_equals_the_onnx_count(tmp_path):
    ov = pytest.importorskip("openvino")
    path = make_onnx(tmp_path / "m.onnx")
    ov.save_model(ov.Core().read_model(str(path)), str(tmp_path / "m.xml"))
    assert model_gop(tmp_path / "m.xml", (32, 32)) == pytest.approx(model_gop(path, (32, 32)))


def test_no_graph_no_count(tmp_path):
    assert model_gop(tmp_path / "m.pth", (32, 32)) is None
    assert model_gop("grpc://localhost:8001/m", (32, 32)) is None


def test_gemm_rates_are_measured_for_both_kinds():
    rates = measure_gemm_limits(threads=1, n=64, seconds=0.0)
    ort = {r.kind for r in rates if r.runtime == "onnxruntime"}
    assert ort == {"int8", "fp32"} and all(math.isfinite(r.tops) and r.tops > 0 for r in rates)
    best = best_limits(rates)
    assert best["int8"].tops == max(r.tops for r in rates if r.kind == "int8")


def test_a_bf16_rate_is_measured_only_where_the_cpu_runs_bf16(monkeypatch):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install '.[openvino]')")
    from runtime.backends import openvino as openvino_backend

    for runs_bf16 in (False, True):
        monkeypatch.setattr(openvino_backend, "cpu_has_bf16", lambda: runs_bf16)
        rates = measure_gemm_limits(threads=1, n=64, seconds=0.0)
        bf16 = [r for r in rates if r.kind == "bf16"]
        assert [(r.runtime, r.op) for r in bf16] == ([("openvino", "MatMul (bf16 hint)")] if runs_bf16 else [])


def test_a_bf16_model_is_set_against_the_bf16_rate_where_one_was_measured(tmp_path, fake_backend):
    """On a bf16 CPU a bf16 row's fraction is of the bf16 GEMM rate (it would show far above 100% of the FP32
    one); where none was measured the model ran in f32, and the FP32 rate bounds it."""
    bf16 = write_model(tmp_path / "a.fake", cost_ms=10.0, precision="bf16")
    config = BenchConfig(warmup_ms=0, duration_s=0.05, min_iters=2, slice_ms=10, size=(33, 33))
    fp32_rate = GemmRate("openvino", "fp32", "MatMul", 0.2)
    for limits, kind, fraction in (([fp32_rate], "fp32", 1.5), ([fp32_rate, GemmRate("openvino", "bf16", "MatMul",
                                                                                   0.6)], "bf16", 0.5)):
        report = run_benchmark([Candidate(bf16, "fake")], config, clock=fake_backend.CLOCK)
        add_limit_fractions(report.results, {bf16: 3.0}, limits)  # 3 GOP in 10 ms: 0.3 TOP/s
        assert (report.results[0].limit_kind, report.results[0].limit_fraction) == (kind, pytest.approx(fraction))


def test_fraction_uses_the_rate_of_the_model_kind(tmp_path, fake_backend):
    fp32 = write_model(tmp_path / "a.fake", cost_ms=10.0)
    int8 = write_model(tmp_path / "b.fake", cost_ms=5.0, precision="int8")
    config = BenchConfig(warmup_ms=0, duration_s=0.05, min_iters=2, slice_ms=10, size=(33, 33))
    report = run_benchmark([Candidate(fp32, "fake"), Candidate(int8, "fake")], config, clock=fake_backend.CLOCK)
    limits = [GemmRate("x", "fp32", "MatMul", 0.5), GemmRate("x", "int8", "MatMulInteger", 2.0),
              GemmRate("y", "int8", "Q/DQ MatMul", 1.0)]
    add_limit_fractions(report.results, {fp32: 3.0, int8: 3.0}, limits)
    by_model = {r.model: r for r in report.results}
    # 3 GOP in 10 ms = 0.3 TOP/s = 60% of the FP32 rate; in 5 ms 0.6 TOP/s = 30% of the best INT8 rate
    assert by_model[fp32].tops == pytest.approx(0.3) and by_model[fp32].limit_fraction == pytest.approx(0.6)
    assert by_model[int8].limit_kind == "int8" and by_model[int8].limit_fraction == pytest.approx(0.3)


def test_a_gpu_row_is_not_divided_by_the_cpu_limit(tmp_path, fake_backend):
    """The measured GEMM rates are the CPU's: a model computed on a GPU keeps its achieved rate but gets no
    fraction of them (a TensorRT row once showed thousands of percent)."""
    from benchmarks.report import format_terminal

    cpu = write_model(tmp_path / "cpu.fake", cost_ms=10.0)
    gpu = write_model(tmp_path / "gpu.fake", cost_ms=0.5, processor="gpu")
    config = BenchConfig(warmup_ms=0, duration_s=0.05, min_iters=2, slice_ms=10, size=(33, 33))
    report = run_benchmark([Candidate(cpu, "fake"), Candidate(gpu, "fake")], config, clock=fake_backend.CLOCK)
    report.limits = [GemmRate("onnxruntime", "fp32", "MatMul", 0.5)]
    add_limit_fractions(report.results, {cpu: 3.0, gpu: 3.0}, report.limits)
    by_model = {r.model: r for r in report.results}
    assert by_model[gpu].processor == "gpu" and by_model[gpu].tops == pytest.approx(6.0)
    assert by_model[gpu].limit_fraction is None and by_model[gpu].limit_kind is None
    assert by_model[cpu].limit_fraction == pytest.approx(0.6)
    assert "1200%" not in format_terminal(report)


def test_report_shows_the_limit(tmp_path, fake_backend, monkeypatch):
    from benchmarks import bench
    from benchmarks.report import format_markdown, format_terminal, to_json

    monkeypatch.setattr(bench, "measure_gemm_limits", lambda threads: [GemmRate("onnxruntime", "fp32", "MatMul", 0.5)])
    model = make_onnx(tmp_path / "m.onnx", size=(33, 33))
    config = BenchConfig(warmup_ms=0, duration_s=0.05, min_iters=2, slice_ms=10, limits=True)
    report = run_benchmark([Candidate(str(model), "onnxruntime")], config)
    row = report.results[0]
    assert row.gop == pytest.approx(2 * 4 * 3 * 33 * 33 / 1e9) and 0 < row.limit_fraction
    text = format_terminal(report)
    assert "of limit" in text and "fp32 0.500 TOP/s (onnxruntime MatMul)" in text
    assert "| TOP/s | of limit |" in format_markdown(report)
    assert to_json(report)["limits"][0]["tops"] == 0.5
    assert np.isfinite(to_json(report)["results"][0]["limit_fraction"])


def test_best_of_two_measurements_keeps_the_faster_per_op():
    from benchmarks.limits import best_of

    first = [GemmRate("ort", "int8", "MatMulInteger", 1.0), GemmRate("ort", "fp32", "MatMul", 0.4)]
    second = [GemmRate("ort", "int8", "MatMulInteger", 0.5), GemmRate("ort", "fp32", "MatMul", 0.6)]
    assert sorted(r.tops for r in best_of(first, second)) == [0.6, 1.0]
