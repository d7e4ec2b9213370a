"""The interleaved measurement loop on fake runners whose cost is counted on a fake clock: ratios and
schedules are exact, and nothing depends on the speed of the machine running the tests."""
from __future__ import annotations

import pytest

from benchmarks.bench import measure_interleaved, run_benchmark
from benchmarks.records import BenchConfig, Candidate
from tests.benchmarks.fakes import FakeClock, FakeRunner, write_model

CONFIG = BenchConfig(batches=(1,), warmup_ms=10, duration_s=0.2, min_iters=5, slice_ms=20)


def _runners(tmp_path, clock, **costs):
    return {name: FakeRunner(write_model(tmp_path / f"{name}.fake", cost_ms=cost), clock=clock)
            for name, cost in costs.items()}


def _batch():
    import numpy as np

    return np.zeros((1, 3, 33, 33), np.float32)


def test_interleaved_ratio_and_minimums(tmp_path):
    clock = FakeClock()
    runners = _runners(tmp_path, clock, slow=3.0, fast=1.0)
    series, schedule = measure_interleaved(runners, _batch(), CONFIG, clock)
    assert series["slow"].latency_ms[0] == pytest.approx(3.0)
    ratio = sum(series["slow"].latency_ms) / len(series["slow"].latency_ms) / (
        sum(series["fast"].latency_ms) / len(series["fast"].latency_ms))
    assert ratio == pytest.approx(3.0)
    for s in series.values():
        assert len(s.latency_ms) >= CONFIG.min_iters and s.busy_s >= CONFIG.duration_s
    # warm-up samples are not recorded: 20 ms slices of 1 ms work hold 20 samples each
    assert len(series["fast"].latency_ms) == 20 * schedule.count("fast")


def test_schedule_alternates_and_reverses(tmp_path):
    clock = FakeClock()
    runners = _runners(tmp_path, clock, a=1.0, b=2.0, c=4.0)
    _, schedule = measure_interleaved(runners, _batch(), CONFIG, clock)
    rounds = [schedule[i:i + 3] for i in range(0, len(schedule), 3)]
    assert len(rounds) >= 2 and all(len(r) == 3 for r in rounds)
    assert rounds[0] == ["a", "b", "c"] and rounds[1] == ["c", "b", "a"]
    # nobody is measured alone: every round gives every runner a turn until all are done
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)


def test_interleaving_keeps_the_ratio_on_a_noisy_machine(tmp_path):
    # Another process makes everything 4x slower for a while in the middle of the run.
    clock = FakeClock(slowdown=lambda t: 4.0 if 0.3 <= t < 0.9 else 1.0)
    runners = _runners(tmp_path, clock, slow=3.0, fast=1.0)
    config = BenchConfig(warmup_ms=0, duration_s=1.0, min_iters=5, slice_ms=20)
    series, _ = measure_interleaved(runners, _batch(), config, clock)
    mean = {k: sum(s.latency_ms) / len(s.latency_ms) for k, s in series.items()}
    assert mean["slow"] / mean["fast"] == pytest.approx(3.0, rel=0.15)


def test_run_benchmark_reports_unavailable_and_speedups(tmp_path, fake_backend):
    base = write_model(tmp_path / "base.fake", cost_ms=8.0)
    fast = write_model(tmp_path / "int8.fake", cost_ms=2.0, precision="int8")
    broken = write_model(tmp_path / "broken.fake", fail="not a loadable model")
    wrong_size = write_model(tmp_path / "big.fake", cost_ms=1.0, size=[65, 65])
    one_only = write_model(tmp_path / "b1.fake", cost_ms=4.0, precision="fp16", max_batch=1)
    candidates = [Candidate(base, "fake", baseline=True), Candidate(fast, "fake"), Candidate(broken, "fake"),
                  Candidate(wrong_size, "fake"), Candidate(str(tmp_path / "missing.fake"), "fake"),
                  Candidate(one_only, "fake")]
    config = BenchConfig(batches=(1, 2), size=(33, 33), warmup_ms=5, duration_s=0.1, min_iters=3,
                         slice_ms=10)
    report = run_benchmark(candidates, config, clock=fake_backend.CLOCK)

    measured = {(r.label, r.batch) for r in report.results}
    assert measured == {("fake fp32", 1), ("fake int8", 1), ("fake fp16", 1), ("fake fp32", 2),
                        ("fake int8", 2)}
    reasons = {(u.model.split("/")[-1], u.batch): u.reason for u in report.unavailable}
    assert "not a loadable model" in reasons[("broken.fake", None)]
    assert "65x65" in reasons[("big.fake", 1)] and "65x65" in reasons[("big.fake", 2)]
    assert "not found" in reasons[("missing.fake", None)]
    assert "up to 1" in reasons[("b1.fake", 2)]
    by = {(r.label, r.batch): r for r in report.results}
    assert by[("fake int8", 1)].speedup == pytest.approx(4.0)
    assert by[("fake fp16", 1)].speedup == pytest.approx(2.0)
    assert by[("fake fp32", 2)].images_per_s == pytest.approx(1000 / 8.0)
    assert report.fastest(1).label == "fake int8" and report.baseline == "fake fp32"
    assert set(report.schedule) == {1, 2}


def test_threads_reach_runners_that_take_them(tmp_path, fake_backend):
    from benchmarks.loading import MemoryProbe, load_candidate

    model = write_model(tmp_path / "m.fake", cost_ms=1.0)
    loaded = load_candidate(Candidate(model, "fake"), 3, MemoryProbe())
    assert loaded.runner.threads == 3 and loaded.label == "fake fp32"


def test_backend_options_reach_the_runners_that_take_them_but_never_the_baseline(tmp_path, fake_backend):
    from benchmarks.loading import MemoryProbe, load_candidate

    model = write_model(tmp_path / "m.fake", cost_ms=1.0)
    given = {"precision": "fp16", "shm": True}  # shm: triton's, so not for this backend
    assert load_candidate(Candidate(model, "fake"), None, MemoryProbe(), backend_options=given).label == "fake fp16"
    baseline = load_candidate(Candidate(model, "fake", baseline=True), None, MemoryProbe(), backend_options=given)
    assert baseline.label == "fake fp32"


def test_nothing_to_benchmark():
    from pspcore.errors import InputError

    with pytest.raises(InputError):
        run_benchmark([], CONFIG)
