"""Segmenting a video or images with decode, inference and encode overlapping: a reader thread decodes and
preprocesses batches, the calling thread runs the model, a writer thread post-processes and encodes. Bounded
queues keep memory flat on long videos; one reader and one writer keep frame order; an exception or Ctrl-C in
any of them stops all three and is re-raised in the caller."""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pspcore.runner import FrameRunner, Runner
from pspcore.errors import InputError
from pspcore.geometry import runner_input_size
from runtime.outputs import ImageOutputs, OutputPaths, VideoOutputs
from pspcore.colours import colorize
from runtime.postprocess import labels_to_frame, merge_tiles, overlay, palette_lut, to_labels
from pspcore.preprocess import prepare_batch, tile_frame
from pspcore.files import is_image, list_images
from runtime.video import VideoReader, read_image


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

    @property
    def fps(self) -> float:
        """End-to-end throughput in frames per second."""
        return self.frames_out / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (f"{self.frames_in} frames in, {self.frames_out} out, {self.skipped} skipped/corrupt, "
                f"{self.fps:.1f} frames/s, backend {self.backend}, "
                + (f"input {self.input_size[0]}x{self.input_size[1]}" if self.input_size else "sized by the server"))


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
        return [labels_to_frame(l, box) for l, box in zip(labels, layouts)]

    def finish(self, frames: list[np.ndarray], output, layouts: list):
        """-> [(labels at frame size, overlay frame)] for the batch's frames."""
        labels = self.labels(output, layouts)
        return [(l, overlay(f, colorize(l, self.lut), self.options.opacity)) for f, l in zip(frames, labels)]


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


class _Stopped(Exception):
    """Raised inside a stage when another stage failed: leave quietly, the first error is reported."""


class _Stages:
    """Bounded queues whose put/get give up when any stage has failed, so no thread waits forever."""

    def __init__(self):
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def put(self, q: queue.Queue, item) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(queue.Full):
                return q.put(item, timeout=0.1)
        raise _Stopped

    def get(self, q: queue.Queue):
        while not self.stop.is_set():
            with contextlib.suppress(queue.Empty):
                return q.get(timeout=0.1)
        raise _Stopped

    def thread(self, target: Callable[[], None], name: str) -> threading.Thread:
        def run():
            try:
                target()
            except _Stopped:
                pass
            except BaseException as exc:  # KeyboardInterrupt from a frame source included: stop everything
                self.errors.append(exc)
                self.stop.set()

        t = threading.Thread(target=run, name=name, daemon=True)
        t.start()
        return t


_END = object()


def _batches(frames: Iterable[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    chunk = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_pipeline(frames: Iterable[np.ndarray], segmenter: Segmenter, write: Callable, total: int | None,
                 options: SegmentOptions) -> int:
    """Decode/prepare in a thread, infer here, finish/write in a thread. `write(frame, labels, overlay)`
    is called once per frame in order. Returns the number of frames written."""
    if options.batch < 1:
        raise InputError(f"--batch must be at least 1, got {options.batch}")
    stages = _Stages()
    prepared, finished = queue.Queue(options.queue_batches), queue.Queue(options.queue_batches)
    bar = tqdm(total=total or None, unit="frame", desc="segmenting", disable=not options.progress,
               dynamic_ncols=True, leave=False)
    written = 0

    def read():
        for chunk in _batches(frames, options.batch):
            stages.put(prepared, (chunk, *segmenter.prepare(chunk)))
        stages.put(prepared, _END)

    def finish():
        nonlocal written
        while (item := stages.get(finished)) is not _END:
            for frame, (labels, blended) in zip(item[0], segmenter.finish(*item)):
                write(frame, labels, blended)
                written += 1
                bar.update(1)

    threads = [stages.thread(read, "psp-decode"), stages.thread(finish, "psp-encode")]
    try:
        while (item := stages.get(prepared)) is not _END:
            chunk, batch, layouts = item
            stages.put(finished, (chunk, segmenter.runner.infer(batch), layouts))
        stages.put(finished, _END)
        threads[1].join()
    except _Stopped:
        pass
    except BaseException:
        stages.stop.set()
        raise
    finally:
        stages.stop.set()
        for t in threads:
            t.join()
        bar.close()
    if stages.errors:
        raise stages.errors[0]
    return written


def _as_paths(output) -> OutputPaths:
    return output if isinstance(output, OutputPaths) else OutputPaths(Path(output))


def segment_video(runner: Runner, video: str | Path, output: OutputPaths | str | Path,
                  options: SegmentOptions | None = None,
                  on_frame: Callable[[int], None] | None = None) -> SegmentResult:
    """Segment every frame of `video` into the overlay video (and mask video / PNGs / JSON) of `output`.
    `on_frame(count)` is called after each frame is written (the writer thread; an exception there stops
    the run like any other)."""
    options, paths = options or SegmentOptions(), _as_paths(output)
    paths.check("video")
    segmenter = make_segmenter(runner, options)
    start = time.perf_counter()
    with VideoReader(video) as reader, VideoOutputs(paths, runner.info, segmenter.lut, reader.fps, reader.size,
                                                    options.codec, options.keep_partial) as out:
        def write(*frame_outputs):
            out.write(*frame_outputs)
            if on_frame:
                on_frame(out.overlay_writer.frames)

        written = run_pipeline(reader, segmenter, write, reader.header_frames, options)
        seconds = time.perf_counter() - start
        result = SegmentResult(reader.decoded, written, reader.skipped, seconds, runner.describe(),
                               segmenter.input_size, out.files(), reader.fps, [*runner.notes])
        if reader.skipped or (reader.header_frames and reader.header_frames != reader.decoded):
            result.notes.append(f"{Path(video).name}: {reader.report()}")
        result.outputs += out.records.save(_summary(result, video))
    return result


def segment_images(runner: Runner, images: str | Path, output: OutputPaths | str | Path,
                   options: SegmentOptions | None = None) -> SegmentResult:
    """Segment one image, or every image in a folder, into overlay image(s) named after the inputs."""
    options, paths = options or SegmentOptions(), _as_paths(output)
    paths.check("folder" if Path(images).is_dir() else "image")
    segmenter = make_segmenter(runner, options)
    files = list_images(images)
    names: list[str] = []
    unreadable: list[str] = []

    def frames() -> Iterator[np.ndarray]:
        for f in files:
            try:
                image = read_image(f)
            except InputError:
                if len(files) == 1:
                    raise
                unreadable.append(f.name)  # one bad file in a folder should not cost the rest
                continue
            names.append(f.name)  # appended before the frame is queued, so the writer always finds it
            yield image

    out = ImageOutputs(paths, runner.info, names, single=len(files) == 1 and not Path(images).is_dir())
    start = time.perf_counter()
    written = run_pipeline(frames(), segmenter, out.write, len(files), options)
    result = SegmentResult(len(files) - len(unreadable), written, len(unreadable), time.perf_counter() - start,
                           runner.describe(), segmenter.input_size, out.files(), None, [*runner.notes])
    if unreadable:
        result.notes.append(f"skipped unreadable images: {', '.join(unreadable[:5])}"
                            + (f" (+{len(unreadable) - 5} more)" if len(unreadable) > 5 else ""))
    result.outputs += out.records.save(_summary(result, images))
    return result


def segment(runner: Runner, source: str | Path, output: OutputPaths | str | Path,
            options: SegmentOptions | None = None) -> SegmentResult:
    """A video file, an image or a folder of images: whichever `source` is."""
    source = Path(source)
    if source.is_dir() or is_image(source):
        return segment_images(runner, source, output, options)
    return segment_video(runner, source, output, options)


def _summary(result: SegmentResult, source) -> dict:
    return {"source": str(source), "backend": result.backend,
            "input_size": list(result.input_size) if result.input_size else None,
            "frames_in": result.frames_in, "frames_out": result.frames_out, "skipped": result.skipped,
            "video_fps": result.video_fps}
