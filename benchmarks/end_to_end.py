"""psp-bench e2e: psp-infer's whole pipeline on a video or a live stream (decode, preprocess, inference,
postprocess, encode, and the waits between them) beside the model alone on the same runner, batch and input
size. Pure rounds sandwich the end-to-end run (P E P), so load from elsewhere that drifts hits both sides."""
from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.bench import run_slice
from benchmarks.loading import make_input
from benchmarks.records import Candidate, Series
from benchmarks.stats import summarize
from pspcore.geometry import runner_input_size
from pspcore.registry import create_runner
from pspcore.runner import FrameRunner, Runner
from runtime.pipeline import SegmentOptions, segment_source
from runtime.sources import Frame, Reconnect, Source, open_source
from runtime.stages import format_stages


@dataclass
class EndToEndResult:
    model: str
    backend: str
    source: str  # what was read (kind, fps, frame size)
    batch: int
    input_size: tuple[int, int] | None
    pure_fps: list[float]  # before and after the end-to-end run
    pure_latency_ms: dict  # trtexec-style statistics of the faster pure round's batch latencies
    e2e_fps: float
    frames_in: int
    frames_out: int
    dropped: int
    realtime: bool
    stages: dict  # runtime.stages.StageTimes.summary()
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """End-to-end over pure throughput (the mean of the pure rounds either side)."""
        return self.e2e_fps / float(np.mean(self.pure_fps)) if self.pure_fps else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}

    def lines(self) -> list[str]:
        size = f"input {self.input_size[0]}x{self.input_size[1]}" if self.input_size else "sized by the server"
        latency = self.stages.get("latency", {})
        return [f"{Path(self.model).name} on {self.backend}, {size}, batch {self.batch}; source {self.source}",
                (f"  pure model   : {np.mean(self.pure_fps):8.1f} frames/s  (rounds "
                 f"{', '.join(f'{v:.1f}' for v in self.pure_fps)}; batch p50 {self.pure_latency_ms['median']:.2f} "
                 f"p95 {self.pure_latency_ms['p95']:.2f} ms)" if self.pure_fps else
                 "  pure model   : not measured (a served ensemble takes frames, not a prepared batch)"),
                f"  end to end   : {self.e2e_fps:8.1f} frames/s  ("
                + (f"{self.ratio:.0%} of pure; " if self.pure_fps else "") + f"{self.frames_out} of "
                f"{self.frames_in} frames kept, {self.dropped} dropped"
                + (", real-time" if self.realtime else "")
                + (f"; latency p50 {latency['p50_ms']:.1f} p95 {latency['p95_ms']:.1f} ms)" if latency else ")"),
                *("  " + line for line in format_stages(self.stages).splitlines())]


class FirstFrames(Source):
    """The first `limit` frames of a source (an endless stream needs an end to be measured)."""

    def __init__(self, source: Source, limit: int | None):
        super().__init__(source.name)
        self.inner, self.limit = source, limit
        self.kind, self.live, self.fps, self.size = source.kind, source.live, source.fps, source.size
        self.total = min(filter(None, (source.total, limit)), default=None)

    def __iter__(self) -> Iterator[Frame]:
        for count, frame in enumerate(self.inner, 1):
            self.decoded, self.skipped = self.inner.decoded, self.inner.skipped
            yield frame
            if self.limit and count >= self.limit:
                return

    def interrupt(self) -> None:
        self.inner.interrupt()

    def report(self) -> str | None:
        return self.inner.report()

    @property
    def notes(self) -> list[str]:
        return self.inner.notes

    @notes.setter
    def notes(self, value) -> None:
        pass  # the inner source's notes are the ones that count

    @property
    def gaps(self) -> list[float]:
        return getattr(self.inner, "gaps", [])


def pure_fps(runner: Runner, size: tuple[int, int], batch: int, seconds: float) -> tuple[float, Series]:
    """Frames per second of back-to-back `infer` calls on one prepared batch (after a short warm-up)."""
    x = make_input(batch, size, seed=0)
    run_slice(runner, x, None, 0.5, time.perf_counter, min_iters=2)
    series = Series()
    run_slice(runner, x, series, seconds, time.perf_counter, min_iters=10)
    return batch * len(series.latency_ms) / series.busy_s, series


def measure_end_to_end(candidate: Candidate, source: str, *, batch: int = 1, size=None, seconds: float = 3.0,
                       frames: int | None = None, realtime: bool | None = None,
                       reconnect: Reconnect | None = None, runner_options: dict | None = None,
                       log: Callable[[str], None] = lambda line: None) -> EndToEndResult:
    """P E P on one runner: pure inference for `seconds`, psp-infer on `source` (its first `frames` frames),
    pure again. The end-to-end run writes the overlay video into a temporary folder: encoding is a stage."""
    runner = create_runner(candidate.backend, candidate.model, **(runner_options or {}))
    options = SegmentOptions(batch=batch, size=size, progress=False, realtime=realtime, codec="MJPG")
    # The source opens first: a camera or stream that is not there fails before seconds of measuring.
    with open_source(source, reconnect=reconnect) as opened, runner, \
            tempfile.TemporaryDirectory(prefix="psp-e2e-") as tmp:
        input_size = None if isinstance(runner, FrameRunner) else runner_input_size(runner, size)
        pure, series = [], []

        def pure_round():  # a served ensemble (no input size) has no prepared batch to time alone
            if input_size:
                log(f"{candidate.model} on {runner.describe()}: pure inference, {seconds:g} s")
                fps, samples = pure_fps(runner, input_size, batch, seconds)
                pure.append(fps)
                series.append(samples)

        pure_round()
        log(f"{candidate.model}: end to end on {opened.describe()}")
        result = segment_source(runner, FirstFrames(opened, frames), Path(tmp) / "e2e.avi", options)
        pure_round()
        described = opened.describe()
    best = series[int(np.argmax(pure))] if series else Series()
    return EndToEndResult(candidate.model, runner.describe(), described, batch, input_size, pure,
                          summarize(best.latency_ms).to_dict() if best.latency_ms else {}, result.fps,
                          result.frames_in, result.frames_out, result.dropped, result.realtime, result.stages,
                          result.notes)


def format_end_to_end(results: list[EndToEndResult]) -> str:
    return "\n\n".join("\n".join(r.lines()) for r in results)
