"""psp-bench's command line: routing to the default command, one-line errors, partial failures."""
from __future__ import annotations

import json

from click.testing import CliRunner

from benchmarks.cli import build_candidates, main
from tests.benchmarks.fakes import write_model

FAST = ["--duration-s", "0.02", "--min-iters", "2", "--warmup-ms", "0", "--slice-ms", "5"]


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_models_go_to_the_latency_command(tmp_path, fake_backend):
    a = write_model(tmp_path / "a.fake", cost_ms=2.0, real=True, size=[33, 33])
    b = write_model(tmp_path / "b.fake", cost_ms=1.0, real=True, precision="int8")
    out = tmp_path / "r.json"
    result = _run(a, b, "--backend", "fake", "--json", out, *FAST)
    assert result.exit_code == 0, result.output
    assert "fastest at batch 1:" in result.output
    data = json.loads(out.read_text())
    assert {r["label"] for r in data["results"]} == {"fake fp32", "fake int8"}
    assert data["results"][0]["size"] == [33, 33]  # the first model's size, used for all
    assert _run("latency", a, "--backend", "fake", *FAST).exit_code == 0


def test_unavailable_model_is_listed_and_the_rest_measured(tmp_path, fake_backend):
    good = write_model(tmp_path / "good.fake", cost_ms=1.0, real=True, size=[33, 33])
    result = _run(good, tmp_path / "gone.fake", "--backend", "fake", *FAST)
    assert result.exit_code == 0, result.output
    assert "unavailable: gone.fake on fake: model not found" in result.output


def test_not_installed_backend_is_listed(tmp_path, fake_backend):
    good = write_model(tmp_path / "good.fake", cost_ms=1.0, real=True, size=[33, 33])
    result = _run(good, "--backend", "fake,tensorrt", *FAST)
    assert result.exit_code == 0, result.output
    assert "unavailable: good.fake on tensorrt: backend tensorrt is not available" in result.output


def test_nothing_measurable_is_one_error_line(tmp_path):
    result = _run(tmp_path / "gone.onnx", *FAST)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: nothing could be measured: gone.onnx")
    assert "Traceback" not in result.output


def test_bad_options_are_usage_errors(tmp_path):
    model = tmp_path / "m.onnx"
    for args in (["--batch", "0"], ["--batch", "x"], ["--size", "12y"], ["--min-iters", "0"]):
        result = _run(model, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
    assert _run("latency").exit_code == 2  # no model at all
    assert _run("--backend", "nope", model).exit_code == 2


def test_baseline_is_first_and_not_repeated():
    cands = build_candidates(("m.pth", "m.onnx"), ("auto",), "m.pth")
    assert [(c.model, c.backend, c.baseline) for c in cands] == [("m.pth", "torch", True),
                                                                 ("m.onnx", "auto", False)]
    cands = build_candidates(("m.onnx", "b.pth"), ("auto",), None)
    assert [c.baseline for c in cands] == [False, True]


def test_help_lists_both_commands():
    result = _run("--help")
    assert result.exit_code == 0 and "accuracy" in result.output and "latency" in result.output


def test_an_option_a_runner_cannot_honour_is_refused_before_measuring(tmp_path, fake_backend):
    """--threads and --device reach every runner or the run is refused (one line, exit 2), as psp-infer does;
    nothing is silently dropped."""
    good = write_model(tmp_path / "good.fake", cost_ms=1.0, real=True, size=[33, 33])
    refused = {("--backend", "fake,tensorrt", "--threads", "2"): "backend tensorrt does not take --threads",
               ("--backend", "fake", "--device", "cuda:1"): "backend fake does not take --device",
               ("--backend", "tensorrt", "--device", "cpu"): "tensorrt runs on a CUDA GPU only"}
    for args, message in refused.items():
        for command in ("latency", "accuracy"):
            extra = ["--data", str(good)] if command == "accuracy" else FAST
            result = _run(command, good, *args, *extra)
            assert result.exit_code == 2, (args, result.output)
            errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
            assert len(errors) == 1 and message in errors[0], (args, result.output)
            assert "batch 1" not in result.output  # refused before any measurement
    assert _run(good, "--backend", "fake", "--threads", "2", *FAST).exit_code == 0  # fake takes threads


def test_a_backend_option_no_measured_runner_takes_is_refused(tmp_path, fake_backend):
    """--shm is triton's: given to fake runners only, it would be silently dropped; refused instead, naming the
    backends it is for. --precision reaches the fake runners (their declaration takes it)."""
    good = write_model(tmp_path / "good.fake", cost_ms=1.0, real=True, size=[33, 33])
    result = _run(good, "--backend", "fake", "--shm", *FAST)
    assert result.exit_code == 2 and "error: --shm reaches no MODEL" in result.output and "triton" in result.output
    result = _run(good, "--backend", "fake", "--precision", "fp16", *FAST)
    assert result.exit_code == 0 and "fake fp16" in result.output, result.output
