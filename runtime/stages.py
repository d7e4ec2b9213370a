"""Where the time goes in psp-infer: every stage of the pipeline (decode, preprocess, inference, postprocess,
encode) and every wait between them adds its durations here; the end gives a mean/p50/p95 table, the run a
live status line (input and output fps, latency p50/p95, dropped frames). For a live source, decode includes
waiting for the next frame to arrive. On a Triton server, inference splits into the server's own time and
client + network (from the server's statistics: means only)."""
from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager

import numpy as np

# The table's rows in pipeline order. The waits are where a stage sat idle for the one before or after it.
STAGES = ("decode", "wait for a frame", "preprocess", "wait for the model", "inference", "  in the server",
          "  client + network", "wait for results", "postprocess", "encode", "latency")
UNITS = {"preprocess": "batch", "inference": "batch", "wait for the model": "batch", "latency": "frame",
         "  in the server": "request", "  client + network": "request"}


class StageTimes:
    """Thread-safe durations per stage (seconds in, milliseconds out). `latency` is per frame, from its decode
    to its outputs written; the status line reads the most recent `window` of them."""

    def __init__(self, window: int = 200):
        self._ms: dict[str, list[float]] = {}
        self._totals: dict[str, tuple[int, float]] = {}  # stages known only as (count, seconds) in all
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

    def add_total(self, stage: str, count: int, seconds: float) -> None:
        """A stage measured elsewhere, known only in total (a server's own statistics): its mean is shown,
        its percentiles are not known."""
        with self._lock:
            self._totals[stage] = (count, seconds)

    def split_server_time(self, before: tuple[int, float] | None, after: tuple[int, float] | None) -> None:
        """Split `inference` (round trips to a server) into the server's own time and the rest (client and
        network), from two readings of the server's cumulative (requests, seconds) around the run."""
        if before is None or after is None or after[0] <= before[0]:
            return
        requests, server_s = after[0] - before[0], after[1] - before[1]
        with self._lock:
            round_trips_s = sum(self._ms.get("inference", ())) / 1000
        self.add_total("  in the server", requests, server_s)
        self.add_total("  client + network", requests, max(0.0, round_trips_s - server_s))

    def count(self, stage: str) -> int:
        with self._lock:
            return len(self._ms.get(stage, ()))

    def summary(self) -> dict[str, dict]:
        """{stage: {count, mean_ms, p50_ms, p95_ms, total_s}} in pipeline order, for the stages that ran."""
        with self._lock:
            measured = {k: np.asarray(v) for k, v in self._ms.items() if v}
            totals = dict(self._totals)
        rows = {s: (int(v.size), float(v.sum()) / 1000, float(np.percentile(v, 50)), float(np.percentile(v, 95)))
                for s, v in measured.items()}
        rows.update({s: (count, seconds, None, None) for s, (count, seconds) in totals.items() if count})
        order = [s for s in STAGES if s in rows] + sorted(set(rows) - set(STAGES))
        return {s: {"per": UNITS.get(s, "call"), "count": rows[s][0],
                    "mean_ms": round(rows[s][1] * 1000 / rows[s][0], 3),
                    "p50_ms": _rounded(rows[s][2]), "p95_ms": _rounded(rows[s][3]),
                    "total_s": round(rows[s][1], 3)} for s in order}

    def status(self, frames_in: int, frames_out: int, dropped: int) -> str:
        """The live line: input and output fps since the start, recent latency, dropped frames."""
        elapsed = max(1e-9, time.perf_counter() - self.started)
        with self._lock:
            recent = np.asarray(self._recent)
        latency = (f"latency p50 {np.percentile(recent, 50):.0f} p95 {np.percentile(recent, 95):.0f} ms"
                   if recent.size else "latency -")
        return f"in {frames_in / elapsed:.1f} fps, out {frames_out / elapsed:.1f} fps, {latency}, dropped {dropped}"


def _rounded(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 3)


def format_stages(summary: dict[str, dict]) -> str:
    """The per-stage table: one row per stage, mean/p50/p95 milliseconds and the count."""
    def ms(value) -> str:
        return f"{value:>9.2f}" if value is not None else f"{'-':>9}"

    lines = [f"{'stage':<20} {'per':>7} {'count':>7} {'mean ms':>9} {'p50 ms':>9} {'p95 ms':>9}"]
    for stage, s in summary.items():
        lines.append(f"{stage:<20} {s['per']:>7} {s['count']:>7} {ms(s['mean_ms'])} {ms(s['p50_ms'])} "
                     f"{ms(s['p95_ms'])}")
    return "\n".join(lines)
