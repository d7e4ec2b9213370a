"""psp-bench's measurement: load every model/backend once (benchmarks.loading), then time them INTERLEAVED
(round-robin slices) so a noisy, shared machine slows all of them alike and their ratio stays fair. trtexec's
convention: warm-up, then at least `duration_s` and at least `min_iters` per runner."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from benchmarks.limits import add_limit_fractions, best_of, count_gops
from benchmarks.loading import Loaded, Log, load_all, make_input, runner_input
from benchmarks.machine import GemmRate, load_average, machine_info, measure_gemm_limits
from benchmarks.memory import NOTE
from benchmarks.records import BenchConfig, BenchReport, Candidate, Result, Series
from benchmarks.stats import summarize
from pspcore.errors import InputError
from pspcore.runner import Runner

Clock = Callable[[], float]


# ----------------------------------------------------------------------------------------------- the loop

def run_slice(runner: Runner, batch: np.ndarray, series: Series | None, seconds: float, clock: Clock,
              min_iters: int = 1) -> None:
    """Run `runner` back to back until `seconds` have passed and `min_iters` iterations are done; record
    each iteration's latency (and the runner's own h2d/compute/d2h split) into `series` unless None."""
    batch = runner_input(runner, batch)
    start = clock()
    done = 0
    while done < min_iters or clock() - start < seconds:
        t0 = clock()
        runner.infer(batch)
        t1 = clock()
        done += 1
        if series is not None:
            timing = runner.last_timing
            series.latency_ms.append((t1 - t0) * 1e3)
            series.h2d_ms.append(timing.h2d_ms)
            series.compute_ms.append(timing.compute_ms)
            series.d2h_ms.append(timing.d2h_ms)


def measure_interleaved(runners: dict[str, Runner], batch: np.ndarray, config: BenchConfig,
                        clock: Clock = time.perf_counter,
                        on_slice: Callable[[str, dict[str, Series]], None] | None = None
                        ) -> tuple[dict[str, Series], list[str]]:
    """Warm each runner up, then give each a slice in turn (order reversed every other round so each one
    follows each neighbour equally) until EVERY runner has `duration_s` of samples and `min_iters`.
    Runners that are done keep taking turns, so the slow ones are never measured alone.
    Returns the samples per runner and the schedule (runner label per slice, in order)."""
    for runner in runners.values():
        run_slice(runner, batch, None, config.warmup_ms / 1e3, clock)
    series = {name: Series() for name in runners}
    schedule: list[str] = []
    order = list(runners)

    def done(name: str) -> bool:
        s = series[name]
        return len(s.latency_ms) >= config.min_iters and s.busy_s >= config.duration_s

    rnd = 0
    while not all(done(name) for name in order):
        for name in order if rnd % 2 == 0 else reversed(order):
            run_slice(runners[name], batch, series[name], config.slice_ms / 1e3, clock)
            schedule.append(name)
            if on_slice:
                on_slice(name, series)
        rnd += 1
    return series, schedule


def summarize_series(loaded: Loaded, series: Series, batch: int, size: tuple[int, int]) -> Result:
    """One Result from raw samples: trtexec statistics, throughput, and the split where a backend has it."""
    latency = summarize(series.latency_ms)
    has_transfers = any(series.h2d_ms) or any(series.d2h_ms)
    qps = len(series.latency_ms) / series.busy_s if series.busy_s > 0 else 0.0
    return Result(
        label=loaded.label, model=loaded.candidate.model, backend=loaded.runner.name,
        precision=loaded.runner.info.precision, batch=batch, size=size, baseline=loaded.candidate.baseline,
        latency=latency, h2d=summarize(series.h2d_ms) if has_transfers else None,
        compute=summarize(series.compute_ms) if any(series.compute_ms) else None,
        d2h=summarize(series.d2h_ms) if has_transfers else None,
        qps=qps, images_per_s=qps * batch, memory=dict(loaded.memory), processor=loaded.runner.processor,
        latency_samples_ms=[round(v, 4) for v in series.latency_ms])


def add_speedups(results: list[Result]) -> None:
    """Speed-up of every result over the baseline at the same batch (median latency ratio)."""
    for batch in {r.batch for r in results}:
        base = next((r for r in results if r.batch == batch and r.baseline), None)
        for r in results:
            if r.batch == batch and base is not None:
                r.speedup = base.latency.median / r.latency.median


# ---------------------------------------------------------------------------------------------- one run

def _quiet(_: str) -> None:
    pass


def run_benchmark(candidates: list[Candidate], config: BenchConfig, log: Log = _quiet,
                  on_slice: Callable[[int, dict[str, Series]], None] | None = None,
                  clock: Clock = time.perf_counter) -> BenchReport:
    """Measure every candidate at every batch size, interleaved. Candidates that cannot run are listed in
    `report.unavailable` with the reason; the rest are measured and reported."""
    if not candidates:
        raise InputError("no model to benchmark")
    machine = machine_info(config.threads)
    loaded, unavailable, size, usable = load_all(candidates, config, log)
    limits: list[GemmRate] = []
    gops: dict[str, float | None] = {}
    if config.limits and loaded:
        log("measuring the machine's INT8 and FP32 GEMM rates (a few seconds)")
        limits = measure_gemm_limits(config.threads)
        gops = count_gops(loaded, size)
    results: list[Result] = []
    schedule: dict[int, list[str]] = {}
    try:
        for b in config.batches:
            group = [item for item in loaded if b in usable[id(item)]]
            if not group:
                continue
            runners = {item.label: item.runner for item in group}
            log(f"batch {b}: measuring {', '.join(runners)} interleaved")
            tick = (lambda name, series, b=b: on_slice(b, series)) if on_slice else None
            measured, schedule[b] = measure_interleaved(runners, make_input(b, size, config.seed), config,
                                                        clock, tick)
            results += [summarize_series(item, measured[item.label], b, size) for item in group]
    finally:
        for item in loaded:
            item.runner.deactivate()
    add_speedups(results)
    if config.limits and results:
        # Again after the timing, keeping the better of the two: on a shared machine a single measurement can
        # land in a busy moment, and the limit is the rate the machine can reach.
        log("measuring the GEMM rates again")
        limits = best_of(limits, measure_gemm_limits(config.threads))
        add_limit_fractions(results, gops, limits)
    machine["load_average_end"] = load_average()
    return BenchReport(config=config, results=results, unavailable=unavailable,
                       machine=machine, memory_note=NOTE, schedule=schedule, limits=limits)
