"""Report files from one fake run: JSON with the agreed keys, a well-formed Markdown table, a PNG plot."""
from __future__ import annotations

import json

import pytest

from benchmarks.bench import run_benchmark
from benchmarks.records import BenchConfig, Candidate
from benchmarks.report import SCHEMA, format_markdown, format_terminal, write_json, write_markdown
from tests.benchmarks.fakes import write_model

STAT_KEYS = {"count", "min", "mean", "median", "p90", "p95", "p99", "max", "cv"}


@pytest.fixture
def report(tmp_path, fake_backend):
    base = write_model(tmp_path / "base.fake", cost_ms=6.0)
    int8 = write_model(tmp_path / "int8.fake", cost_ms=2.0, precision="int8")
    broken = write_model(tmp_path / "broken.fake", fail="corrupt")
    config = BenchConfig(batches=(1, 4), size=(33, 33), warmup_ms=5, duration_s=0.1, min_iters=3, slice_ms=10)
    cands = [Candidate(base, "fake", baseline=True), Candidate(int8, "fake"), Candidate(broken, "fake")]
    return run_benchmark(cands, config, clock=fake_backend.CLOCK)


def test_json_report(report, tmp_path):
    data = json.loads(write_json(report, tmp_path / "out" / "bench.json").read_text())
    assert data["schema"] == SCHEMA and data["baseline"] == "fake fp32"
    assert data["fastest"] == {"1": "fake int8", "4": "fake int8"}
    assert {"cpu", "cores", "threads", "date"} <= set(data["machine"])
    assert data["config"]["batches"] == [1, 4] and data["config"]["min_iters"] == 3
    assert len(data["results"]) == 4
    for r in data["results"]:
        assert STAT_KEYS == set(r["latency"])
        assert r["latency"]["count"] == len(r["latency_samples_ms"]) >= 3
        assert r["images_per_s"] == pytest.approx(r["qps"] * r["batch"])
        assert r["h2d"] is None and r["d2h"] is None  # a host backend has no transfers
        assert r["speedup"] > 0
    assert data["unavailable"][0]["reason"].endswith("corrupt")
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind


def test_markdown_table_is_well_formed(report, tmp_path):
    text = write_markdown(report, tmp_path / "bench.md").read_text()
    assert text == format_markdown(report)
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4  # header, separator, one row per runner and batch
    assert len({line.count("|") for line in table}) == 1
    assert set(table[1].replace("|", "").replace(":", "").replace(" ", "")) == {"-"}
    assert "fastest at batch 1: fake int8" in text and "3.00x PyTorch eager FP32" in text
    assert "unavailable: broken.fake on fake" in text


def test_terminal_table_names_fastest_and_baseline(report):
    text = format_terminal(report)
    assert "fake fp32 *" in text and "median ms" in text
    assert "fastest at batch 4: fake int8" in text


def test_plot_is_written(report, tmp_path):
    pytest.importorskip("matplotlib")
    from benchmarks.plot import write_plot

    png = write_plot(report, tmp_path / "bench.png")
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000


def test_plot_of_one_batch(tmp_path, fake_backend):
    pytest.importorskip("matplotlib")
    from benchmarks.plot import write_plot

    model = write_model(tmp_path / "m.fake", cost_ms=1.0)
    config = BenchConfig(size=(33, 33), warmup_ms=0, duration_s=0.05, min_iters=3, slice_ms=10)
    single = run_benchmark([Candidate(model, "fake")], config, clock=fake_backend.CLOCK)
    assert write_plot(single, tmp_path / "one.png").stat().st_size > 10_000


def test_busy_machine_is_flagged(report):
    from benchmarks.machine import busy_warning

    report.machine.update(cores=2, load_average=1.0, load_average_end=1.5)
    assert busy_warning(report.machine) is None
    report.machine["load_average_end"] = 6.0
    assert "load average up to 6.0 on 2 cores" in format_terminal(report)
