"""psp-infer throughput: how close psp-infer's end-to-end video throughput (decode, preprocess,
inference, post-process, encode) comes to the backend's pure inference throughput at the same size and batch.

    python -m experiments.infer_throughput [--model M.onnx] [--frames 300] [--batch 1] [--json out.json]

Without --model it exports pspnet18 (context-scenes classes, random weights: speed does not depend on them)
at the variant's 129x129 input. The two measurements alternate for `--rounds` rounds and are
compared per round (see `measure`), which is the fairest reading on a machine shared with other work."""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np

from benchmarks.end_to_end import pure_fps
from benchmarks.machine import machine_info
from benchmarks.report import write_text
from benchmarks.stats import summarize
from pspcore.registry import create_runner
from pspcore.runner import Runner
from pspcore.cli import SIZE, Command
from pspcore.files import atomic_output
from pspnet.labels import get_label_set
from pspcore.geometry import runner_input_size
from runtime.pipeline import SegmentOptions, segment_video


@dataclass
class ThroughputReport:
    model: str
    backend: str
    input_size: tuple[int, int]
    batch: int
    video: str
    frames: int
    pure_fps: list[float]  # rounds + 1 pure measurements, before, between and after the e2e runs
    e2e_fps: list[float]  # one per round
    busy: list[float]  # fraction of each e2e run's wall time the model was running
    pure_latency_ms: dict  # trtexec-style statistics of the fastest pure round's batch latencies
    machine: dict

    @property
    def ratios(self) -> list[float]:
        """Each e2e run over the mean of the pure rounds either side of it."""
        return [e / ((a + b) / 2) for e, a, b in zip(self.e2e_fps, self.pure_fps, self.pure_fps[1:])]

    @property
    def ratio(self) -> float:
        return float(np.median(self.ratios))

    def lines(self) -> list[str]:
        h, w = self.input_size
        return [f"model {Path(self.model).name}, backend {self.backend}, input {h}x{w}, batch {self.batch}, "
                f"{self.frames} frames of {Path(self.video).name}",
                f"pure inference : {np.median(self.pure_fps):7.1f} frames/s  (median; rounds: "
                f"{', '.join(f'{v:.1f}' for v in self.pure_fps)})",
                f"psp-infer e2e  : {np.median(self.e2e_fps):7.1f} frames/s  (median; rounds: "
                f"{', '.join(f'{v:.1f}' for v in self.e2e_fps)})",
                f"e2e / pure     : {self.ratio:7.1%}  (median; rounds: "
                f"{', '.join(f'{r:.0%}' for r in self.ratios)}; target >= 85%)",
                f"model busy     : {np.median(self.busy):7.1%}  of e2e wall time (median of rounds)"]


def export_demo_model(path: Path) -> Path:
    """pspnet18 with the context-scenes classes, exported at its 129x129 input (needs torch)."""
    from export.onnx.exporter import export_onnx
    from pspnet import create_model
    from pspnet.checkpoint import info_for_config

    classes = get_label_set("context-scenes").num_classes
    model = create_model("pspnet18", num_classes=classes, aux=False).eval()
    info = info_for_config(model.config, "context-scenes")
    export_onnx(model, info, path, size=info.input_size)
    return path


class _BusyClock:
    """Wraps a runner to add up the time its `infer` calls take inside the pipeline."""

    def __init__(self, runner: Runner):
        self._runner, self.busy_s = runner, 0.0

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def infer(self, batch):
        start = time.perf_counter()
        try:
            return self._runner.infer(batch)
        finally:
            self.busy_s += time.perf_counter() - start


def measure(model: Path, video: Path, work: Path, backend: str, batch: int, size, threads: int | None,
            rounds: int, seconds: float) -> ThroughputReport:
    """Pure rounds sandwich the end-to-end runs (P E P E P), so each run is compared with the pure
    throughput just before and after it: drifting load from elsewhere hits both sides alike."""
    runner = create_runner(backend, model, threads=threads)
    pure, e2e, busy, all_series, frames = [], [], [], [], 0
    with runner:
        input_size = runner_input_size(runner, size)
        for i in range(rounds + 1):
            fps, series = pure_fps(runner, input_size, batch, seconds)
            pure.append(fps)
            all_series.append(series)
            if i < rounds:
                timed = _BusyClock(runner)
                result = segment_video(timed, video, work / "out.mp4",
                                       SegmentOptions(batch=batch, size=size, progress=False))
                e2e.append(result.fps)
                busy.append(timed.busy_s / result.seconds)
                frames = result.frames_out
    best = all_series[max(range(len(pure)), key=pure.__getitem__)]
    return ThroughputReport(str(model), runner.describe(), input_size, batch, str(video), frames, pure, e2e, busy,
                            summarize(best.latency_ms).to_dict(), machine_info(threads))


@click.command(cls=Command)
@click.option("--model", type=click.Path(path_type=Path), help="An ONNX model (default: export pspnet18).")
@click.option("--video", type=click.Path(path_type=Path), help="Input video (default: a generated one).")
@click.option("--frames", type=click.IntRange(min=1), default=300, show_default=True,
              help="Length of the generated video.")
@click.option("--video-size", type=SIZE, default="240x320", show_default=True, help="Generated video HxW.")
@click.option("--backend", default="auto", show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--size", type=SIZE, default=None, help="Input HxW for dynamic-shape models.")
@click.option("--threads", type=click.IntRange(min=1), help="Inference threads.")
@click.option("--rounds", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--seconds", type=float, default=5.0, show_default=True, help="Pure-inference time per round.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the report as JSON.")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), help="Write the report as Markdown.")
def main(model, video, frames, video_size, backend, batch, size, threads, rounds, seconds, json_path,
         markdown_path):
    """Pure inference vs end-to-end psp-infer throughput (one table)."""
    with tempfile.TemporaryDirectory(prefix="psp-throughput-") as tmp:
        work = Path(tmp)
        model = model or export_demo_model(work / "pspnet18_context-scenes_129.onnx")
        if video is None:
            from pspnet.data.context_scenes import write_video

            video = write_video(work / "clip.mp4", num_frames=frames, size=video_size)
        report = measure(model, video, work, backend, batch, size, threads, rounds, seconds)
    for line in report.lines():
        click.echo(line)
    if json_path:
        with atomic_output(json_path, suffix=".json") as out:
            out.write_text(json.dumps({**asdict(report), "ratios": report.ratios, "ratio": report.ratio}, indent=1))
    if markdown_path:
        write_text("\n".join(f"- {line}" for line in report.lines()) + "\n", markdown_path)


if __name__ == "__main__":
    main()
