"""Where the time goes in psp-infer: every stage of the pipeline (decode, preprocess, inference, postprocess,
encode) and every wait between them adds its durations here; the end gives a mean/p50/p95 table, the run a
live status line (input and output fps, latency p50/p95, dropped frames)."""
from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager

import numpy as np

# The table's rows in pipeline order. The waits are where a stage sat idle for the one before or after it.
STAGES = ("decode", "wait for a frame", "preprocess", "wait for the model", "inference", "wait for results",
          "postprocess", "encode", "latency")
UNITS = {"preprocess": "batch", "inference": "batch", "wait for the model": "batch", "latency": "frame"}


class StageTimes:
    """Thread-safe durations per stage (seconds in, milliseconds out). `latency` is per frame, from its decode
    to its outputs written; the status line reads the most recent `window` of them."""

    def __init__(self, window: int = 200):
        self._ms: dict[str, list[float]] = {}
        self._recent = deque(maxlen=window)
        self._lock = threading.Lock()
        self.started = time.perf_counter()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._ms.setdefault(stage, []).append(seconds * 1000)
            if stage == "latency":
                self._recent.append(seconds * 1000)

    @contextmanager
    def timing(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def timed(self, items, stage: str):
        """Iterate `items`, adding the time each `next` takes to `stage`."""
        iterator = iter(items)
        while True:
            start = time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            self.add(stage, time.perf_counter() - start)
            yield item

    def count(self, stage: str) -> int:
        with self._lock:
            return len(self._ms.get(stage, ()))

    def summary(self) -> dict[str, dict]:
        """{stage: {count, mean_ms, p50_ms, p95_ms, total_s}} in pipeline order, for the stages that ran."""
        with self._lock:
            measured = {k: np.asarray(v) for k, v in self._ms.items() if v}
        order = [s for s in STAGES if s in measured] + sorted(set(measured) - set(STAGES))
        return {s: {"per": UNITS.get(s, "call"), "count": int(measured[s].size),
                    "mean_ms": round(float(measured[s].mean()), 3),
                    "p50_ms": round(float(np.percentile(measured[s], 50)), 3),
                    "p95_ms": round(float(np.percentile(measured[s], 95)), 3),
                    "total_s": round(float(measured[s].sum()) / 1000, 3)} for s in order}

    def status(self, frames_in: int, frames_out: int, dropped: int) -> str:
        """The live line: input and output fps since the start, recent latency, dropped frames."""
        elapsed = max(1e-9, time.perf_counter() - self.started)
        with self._lock:
            recent = np.asarray(self._recent)
        latency = (f"latency p50 {np.percentile(recent, 50):.0f} p95 {np.percentile(recent, 95):.0f} ms"
                   if recent.size else "latency -")
        return f"in {frames_in / elapsed:.1f} fps, out {frames_out / elapsed:.1f} fps, {latency}, dropped {dropped}"


def format_stages(summary: dict[str, dict]) -> str:
    """The per-stage table: one row per stage, mean/p50/p95 milliseconds and the count."""
    lines = [f"{'stage':<20} {'per':>6} {'count':>7} {'mean ms':>9} {'p50 ms':>9} {'p95 ms':>9}"]
    for stage, s in summary.items():
        lines.append(f"{stage:<20} {s['per']:>6} {s['count']:>7} {s['mean_ms']:>9.2f} {s['p50_ms']:>9.2f} "
                     f"{s['p95_ms']:>9.2f}")
    return "\n".join(lines)
