"""Segmenting a source (runtime/sources.py) with decode, inference and encode overlapping: a reader thread decodes
and preprocesses batches, the calling thread runs the model, a writer thread post-processes and encodes. Bounded
queues keep memory flat on long videos; one reader and one writer keep frame order; an exception or Ctrl-C in
any of them stops all of them and is re-raised in the caller. Live sources run in real-time mode
(runtime/realtime.py); every stage's time goes to a StageTimes (runtime/stages.py)."""
from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pspcore.colours import colorize
from pspcore.errors import InputError
from pspcore.geometry import runner_input_size
from pspcore.preprocess import prepare_batch, tile_frame
from pspcore.runner import FrameRunner, Runner
from runtime.outputs import ImageOutputs, OutputPaths, VideoOutputs
from runtime.postprocess import labels_to_frame, merge_tiles, overlay, palette_lut, to_labels
from runtime.realtime import LatestFrame, Stopped
from runtime.sources import Frame, ImageSource, Reconnect, Source, VideoFileSource, image_source, open_source
from runtime.stages import StageTimes, format_stages
from runtime.video import DEFAULT_FPS


@dataclass
class SegmentOptions:
    batch: int = 1
    size: tuple[int, int] | None = None  # network input (H, W) for models with a dynamic size
    opacity: float = 0.5
    tile: bool = False  # sliding windows of the input size over the full-resolution frame
    codec: str = "mp4v"
    keep_partial: bool = True  # on Ctrl-C keep `<name>.partial.<ext>` (else remove it)
    progress: bool = True
    queue_batches: int = 2  # per queue; bounds memory to a few batches whatever the video length
    realtime: bool | None = None  # keep only the newest frame when the model is busy; None: for live sources
    jsonl_rle: bool = False  # --jsonl lines carry the label map, run-length encoded


@dataclass
class SegmentResult:
    frames_in: int
    frames_out: int
    skipped: int
    seconds: float
    backend: str
    input_size: tuple[int, int] | None  # None: a served ensemble that sizes frames itself
    outputs: list[Path]
    video_fps: float | None = None
    notes: list[str] = field(default_factory=list)
    dropped: int = 0  # real-time mode: frames replaced by newer ones before the model was free
    realtime: bool = False
    stages: dict = field(default_factory=dict)  # StageTimes.summary(): per stage mean/p50/p95 ms
    source: str = ""  # what was read: name, kind, fps and frame size (or that they are unknown)
    gaps: list[float] = field(default_factory=list)  # seconds a live stream was away before it was reopened

    @property
    def fps(self) -> float:
        """End-to-end throughput in frames per second."""
        return self.frames_out / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (f"{self.frames_in} frames in, {self.frames_out} out, {self.skipped} skipped/corrupt, "
                + (f"{self.dropped} dropped (real-time), " if self.realtime else "")
                + f"{self.fps:.1f} frames/s, backend {self.backend}, "
                + (f"input {self.input_size[0]}x{self.input_size[1]}" if self.input_size else "sized by the server"))
        return text + ("\n" + format_stages(self.stages) if self.stages else "")


class Segmenter:
    """Frames to network batches and network outputs back to (labels, overlay) per frame."""

    def __init__(self, runner: Runner, input_size: tuple[int, int], options: SegmentOptions):
        if options.tile and runner.info.output == "labels":
            raise InputError("sliding windows need a logits output; this model outputs labels")
        if not 0.0 <= options.opacity <= 1.0:
            raise InputError(f"opacity must be between 0 and 1, got {options.opacity}")
        self.runner, self.input_size, self.options = runner, input_size, options
        self.lut = palette_lut(runner.info)

    def prepare(self, frames: list[np.ndarray]) -> tuple[np.ndarray | list, list]:
        if not self.options.tile:
            return prepare_batch(frames, self.runner.info, self.input_size)
        tiled = [tile_frame(f, self.runner.info, self.input_size) for f in frames]
        return np.concatenate([crops for crops, _ in tiled]), [t for _, t in tiled]

    def labels(self, output: np.ndarray, layouts: list) -> list[np.ndarray]:
        """The network's output for a batch -> one label map per frame, at the frame's size."""
        if self.options.tile:
            bounds = np.cumsum([0] + [len(t.origins) for t in layouts])
            return [merge_tiles(output[a:b], t) for a, b, t in zip(bounds[:-1], bounds[1:], layouts)]
        labels = to_labels(output, self.runner.info.num_classes)
        return [labels_to_frame(lab, box) for lab, box in zip(labels, layouts)]

    def finish(self, frames: list[np.ndarray], output, layouts: list):
        """-> [(labels at frame size, overlay frame)] for the batch's frames."""
        labels = self.labels(output, layouts)
        return [(lab, overlay(f, colorize(lab, self.lut), self.options.opacity)) for f, lab in zip(frames, labels)]


class FrameSegmenter(Segmenter):
    """For a FrameRunner (a served ensemble), which pre- and post-processes on its side: RGB frames go in,
    label maps at the frames' size come back. Its input size is the one its model records (informational)."""

    def __init__(self, runner: FrameRunner, options: SegmentOptions):
        if options.tile:
            raise InputError("sliding windows need a logits output; this served model returns labels")
        super().__init__(runner, runner.info.input_size, options)

    def prepare(self, frames: list[np.ndarray]) -> tuple[list, list]:
        return [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames], []

    def labels(self, output, layouts: list) -> list[np.ndarray]:
        return list(output)  # already label maps at each frame's size


def make_segmenter(runner: Runner, options: SegmentOptions) -> Segmenter:
    """The segmenter for this kind of runner (activated here if it is not yet)."""
    runner.activate()
    if isinstance(runner, FrameRunner):
        return FrameSegmenter(runner, options)
    return Segmenter(runner, runner_input_size(runner, options.size), options)


class _Stages:
    """Bounded queues whose put/get give up when any stage has failed, so no thread waits forever."""

    def __init__(self):
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def put(self, q: queue.Queue, item) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(queue.Full):
                return q.put(item, timeout=0.1)
        raise Stopped

    def get(self, q: queue.Queue):
        while not self.stop.is_set():
            with contextlib.suppress(queue.Empty):
                return q.get(timeout=0.1)
        raise Stopped

    def acquire(self, credits: threading.Semaphore) -> None:
        while not self.stop.is_set():
            if credits.acquire(timeout=0.1):
                return
        raise Stopped

    def thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        def run():
            try:
                target()
            except Stopped:
                pass
            except BaseException as exc:  # KeyboardInterrupt from a frame source included: stop everything
                self.errors.append(exc)
                self.stop.set()

        t = threading.Thread(target=run, name=name, daemon=True)
        t.start()
        return t


_END = object()


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    chunk = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class PipelineCounts:
    frames_in: int = 0  # decoded and handed to the pipeline
    written: int = 0
    dropped: int = 0  # real-time mode: decoded but replaced by a newer frame before the model was free


def run_pipeline(frames: Iterable[Frame], segmenter: Segmenter, write: Callable, total: int | None,
                 options: SegmentOptions, times: StageTimes | None = None, realtime: bool = False) -> PipelineCounts:
    """Decode/prepare in a thread, infer here, finish/write in a thread. `write(frame, labels, overlay)`
    is called once per frame kept, in order. Without `realtime` every frame is kept; with it a thread decodes
    into a newest-frame slot (runtime/realtime.py) and a batch is taken only when the model is free."""
    if options.batch < 1:
        raise InputError(f"--batch must be at least 1, got {options.batch}")
    times = times or StageTimes()
    stages = _Stages()
    counts = PipelineCounts()
    prepared, finished = queue.Queue(options.queue_batches), queue.Queue(options.queue_batches)
    bar = tqdm(total=None if realtime else total or None, unit="frame", desc="segmenting",
               disable=not options.progress, dynamic_ncols=True, leave=False)
    slot = LatestFrame(stages.stop) if realtime else None
    credits = threading.Semaphore(1) if realtime else None  # one batch between taking frames and the model
    shown = [time.perf_counter()]

    def counted(items):
        for frame in items:
            counts.frames_in += 1
            yield frame

    decoded = counted(times.timed(frames, "decode"))

    def grab():  # real-time mode: decode as fast as the source delivers, never waiting for the model
        for frame in decoded:
            slot.put(frame)
        slot.end()

    def newest():
        while (frame := slot.take()) is not None:
            yield frame

    def read():
        source = times.timed(newest(), "wait for a frame") if realtime else decoded
        while True:
            if credits:
                with times.timing("wait for the model"):
                    stages.acquire(credits)
            chunk = list(itertools.islice(source, options.batch))
            if not chunk:
                break
            with times.timing("preprocess"):
                item = (chunk, *segmenter.prepare([f.image for f in chunk]))
            stages.put(prepared, item)
        stages.put(prepared, _END)

    def finish():
        while True:
            with times.timing("wait for results"):
                item = stages.get(finished)
            if item is _END:
                break
            with times.timing("postprocess"):
                results = segmenter.finish([f.image for f in item[0]], *item[1:])
            for frame, (labels, blended) in zip(item[0], results):
                with times.timing("encode"):
                    write(frame, labels, blended)
                times.add("latency", time.perf_counter() - frame.decoded_at)
                counts.written += 1
                bar.update(1)
            if time.perf_counter() - shown[0] > 0.5:
                shown[0] = time.perf_counter()
                bar.set_postfix_str(times.status(counts.frames_in, counts.written, slot.dropped if slot else 0),
                                    refresh=False)

    # The stages already run beside the model in threads of their own: OpenCV's thread pool inside each decode,
    # resize and encode would take the cores the model computes on (docs/results.md, live section).
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    threads = [stages.thread(read, "psp-prepare"), stages.thread(finish, "psp-encode")]
    if realtime:
        threads.append(stages.thread(grab, "psp-decode"))
    try:
        while (item := stages.get(prepared)) is not _END:
            chunk, batch, layouts = item
            with times.timing("inference"):
                output = segmenter.runner.infer(batch)
            if credits:
                credits.release()
            stages.put(finished, (chunk, output, layouts))
        stages.put(finished, _END)
        threads[1].join()
    except Stopped:
        pass
    except BaseException:
        stages.stop.set()
        raise
    finally:
        stages.stop.set()
        if hasattr(frames, "interrupt"):
            frames.interrupt()  # a source waiting to reconnect gives up now
        for t in threads:
            t.join()
        cv2.setNumThreads(opencv_threads)
        bar.close()
    if stages.errors:
        raise stages.errors[0]
    counts.dropped = slot.dropped if slot else 0
    return counts


def _as_paths(output) -> OutputPaths:
    return output if isinstance(output, OutputPaths) else OutputPaths(Path(output))


def segment_source(runner: Runner, source: Source, output: OutputPaths | str | Path,
                   options: SegmentOptions | None = None,
                   on_frame: Callable[[int], None] | None = None) -> SegmentResult:
    """Segment the frames of an open `source` into `output`: images into overlay images named after them, every
    other source into the overlay video (and mask video / PNGs / JSON / JSON lines). Real-time mode is
    options.realtime, or by default whether the source is live. `on_frame(count)` is called after each frame
    is written (the writer thread; an exception there stops the run like any other)."""
    options, paths = options or SegmentOptions(), _as_paths(output)
    images = isinstance(source, ImageSource)
    paths.check(("image" if source.single else "folder") if images else "video")
    segmenter = make_segmenter(runner, options)
    realtime = source.live if options.realtime is None else options.realtime
    times = StageTimes()
    notes = [*runner.notes]
    if images:
        outputs = ImageOutputs(paths, runner.info, single=source.single, rle=options.jsonl_rle)
    else:
        fps = source.fps or DEFAULT_FPS
        if not source.fps:
            notes.append(f"{source.name}: the source does not say its fps; the output video is {fps:g} fps")
        outputs = VideoOutputs(paths, runner.info, segmenter.lut, fps, source.size, options.codec,
                               options.keep_partial, rle=options.jsonl_rle, paced=realtime)
    with outputs as out:
        def write(*frame_outputs):
            out.write(*frame_outputs)
            if on_frame:
                on_frame(out.count)

        server_time = getattr(runner, "server_time", None)  # a served model: its own statistics, read around
        before = server_time() if server_time else None
        counts = run_pipeline(source, segmenter, write, source.total, options, times, realtime)
        times.split_server_time(before, server_time() if server_time else None)
        seconds = time.perf_counter() - times.started
        notes += source.notes + out.notes()
        if (line := source.report()) is not None:
            notes.append(line)
        result = SegmentResult(counts.frames_in, counts.written, source.skipped, seconds, runner.describe(),
                               segmenter.input_size, out.files(), source.fps, notes, dropped=counts.dropped,
                               realtime=realtime, stages=times.summary(), source=source.describe(),
                               gaps=list(getattr(source, "gaps", [])))
        result.outputs += out.records.save(_summary(result, source.name))
    return result


def segment_video(runner: Runner, video: str | Path, output: OutputPaths | str | Path,
                  options: SegmentOptions | None = None,
                  on_frame: Callable[[int], None] | None = None) -> SegmentResult:
    """Segment every frame of the video file `video` (see segment_source)."""
    with VideoFileSource(video) as source:
        return segment_source(runner, source, output, options, on_frame)


def segment_images(runner: Runner, images: str | Path, output: OutputPaths | str | Path,
                   options: SegmentOptions | None = None) -> SegmentResult:
    """Segment one image, or every image in a folder, into overlay image(s) named after the inputs."""
    with image_source(images) as source:
        return segment_source(runner, source, output, options)


def segment(runner: Runner, source: str | Path, output: OutputPaths | str | Path,
            options: SegmentOptions | None = None, *, frame_size: tuple[int, int] | None = None,
            reconnect: Reconnect | None = None) -> SegmentResult:
    """Whatever `source` names (see runtime.sources.open_source): a video, image(s), a camera, a stream, `-`."""
    with open_source(source, frame_size=frame_size, reconnect=reconnect) as opened:
        return segment_source(runner, opened, output, options)


def _summary(result: SegmentResult, source) -> dict:
    return {"source": str(source), "backend": result.backend,
            "input_size": list(result.input_size) if result.input_size else None,
            "frames_in": result.frames_in, "frames_out": result.frames_out, "skipped": result.skipped,
            "video_fps": result.video_fps, "seconds": round(result.seconds, 3), "fps": round(result.fps, 3),
            "realtime": result.realtime, "dropped": result.dropped,
            "stream_gaps_s": [round(g, 3) for g in result.gaps], "stages": result.stages}
