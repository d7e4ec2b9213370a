"""Where a segmentation goes: the overlay video or images, an optional colour-mask video, per-frame label
PNGs, a JSON of per-frame class pixel fractions and JSON lines for analytics. Every file appears at its final
name only when complete, except the JSON lines, which a consumer reads while they grow."""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pspcore.colours import colorize
from pspcore.errors import InputError
from pspcore.files import IMAGE_SUFFIXES, atomic_output, check_folder, check_writable, is_image
from pspcore.label_maps import as_labels
from pspcore.model_info import ModelInfo
from runtime.postprocess import class_fractions, rle_encode
from runtime.sources import Frame
from runtime.video import VideoWriter, write_image


@dataclass
class OutputPaths:
    overlay: Path  # a video file, an image file, or a folder for a folder of images
    mask_video: Path | None = None
    masks_dir: Path | None = None
    json: Path | None = None
    jsonl: Path | None = None  # one JSON line per frame, written as frames finish (a consumer can tail it)

    def check(self, source_kind: str) -> None:
        """Before the first frame is decoded: each output can be written as what it is meant to be.
        `source_kind`: "video", "image" (one file) or "folder"."""
        overlay = Path(self.overlay)
        if source_kind == "video" and is_image(overlay):
            raise InputError(f"{overlay}: the input is a video; give the overlay a video extension (.mp4, .avi)")
        if source_kind == "image" and overlay.suffix and not is_image(overlay) and not overlay.is_dir():
            raise InputError(f"{overlay}: the input is an image; write an image ({', '.join(IMAGE_SUFFIXES[:3])}, "
                             "...) or a folder, not a " + overlay.suffix + " file")
        if source_kind == "folder" or (source_kind == "image" and (overlay.is_dir() or not overlay.suffix)):
            check_folder(overlay, "output folder")
        else:
            check_writable(overlay)
        for path in (self.mask_video, self.json, self.jsonl):
            if path:
                check_writable(path)
        if self.masks_dir:
            check_folder(self.masks_dir, "--masks-dir")


class FrameRecords(contextlib.ExitStack):
    """Per-frame label PNGs (--masks-dir), class pixel fractions (--json, written at the end) and JSON lines
    (--jsonl, one per frame as it finishes, flushed, so a downstream process can tail the file; lines already
    written stay valid if the run stops). A context manager: it closes the JSON lines file."""

    def __init__(self, paths: OutputPaths, info: ModelInfo, rle: bool = False):
        super().__init__()
        self.masks_dir, self.json_path, self.info, self.rle = paths.masks_dir, paths.json, info, rle
        self.frames: list[dict] = []
        self.count = 0
        self._jsonl = self.enter_context(open(paths.jsonl, "w", encoding="utf-8")) if paths.jsonl else None

    def __exit__(self, exc_type, exc, tb):
        result = super().__exit__(exc_type, exc, tb)
        if exc_type is not None and self._jsonl and not self.count:
            Path(self._jsonl.name).unlink(missing_ok=True)  # a failure before the first frame leaves no file
        return result

    def fractions(self, labels: np.ndarray) -> dict[str, float]:
        """{class name: share of the frame's pixels} for the classes present."""
        fractions = class_fractions(labels, self.info.num_classes)
        return {self.info.class_name(int(c)): round(float(fractions[c]), 6) for c in np.flatnonzero(fractions)}

    def add(self, name: str, labels: np.ndarray, frame: Frame | None = None) -> None:
        if self.masks_dir:
            if not self.count:  # made with the first frame: a run stopped before it leaves no empty folder
                self.masks_dir.mkdir(parents=True, exist_ok=True)
            # PNG keeps label values exact; 16 bits when a model has more than 256 classes.
            write_image(self.masks_dir / f"{Path(name).stem}.png", as_labels(labels, self.info.num_classes))
        if self.json_path:
            self.frames.append({"frame": len(self.frames), "name": name, "fractions": self.fractions(labels)})
        if self._jsonl:
            line = {"frame": self.count, "index": frame.index if frame else self.count, "name": name,
                    "timestamp": None if frame is None or frame.timestamp is None else round(frame.timestamp, 6),
                    "latency_ms": None if frame is None else round((time.perf_counter() - frame.decoded_at) * 1000,
                                                                   3),
                    "fractions": self.fractions(labels)}
            if self.rle:
                line["labels_rle"] = rle_encode(labels)
            self._jsonl.write(json.dumps(line, separators=(",", ":")) + "\n")
            self._jsonl.flush()
        self.count += 1

    def save(self, summary: dict) -> list[Path]:
        if not self.json_path:
            return []
        doc = {**summary, "classes": [self.info.class_name(i) for i in range(self.info.num_classes)],
               "frames": self.frames}
        with atomic_output(self.json_path, suffix=".json") as tmp:
            tmp.write_text(json.dumps(doc, indent=1))
        return [self.json_path]


@dataclass
class Pacing:
    """A constant-rate video from frames stamped on the source's clock, for real-time runs (frames dropped, or a
    stream's rate only guessed): each frame goes to its slot on the video's clock. A frame a slot or more late
    first repeats the one before it (what was on screen meanwhile); one more than a slot early is left out of the
    video (its labels still reach --masks-dir, --json and --jsonl). So the video plays at the source's speed."""

    fps: float
    start: float | None = None
    slots: int = 0  # video frames placed
    held: int = 0  # repeats of an earlier frame
    left_out: int = 0

    def place(self, timestamp: float | None) -> tuple[int, bool]:
        """(repeats of the previous frame to write first, whether this frame goes into the video)."""
        if timestamp is None:
            self.slots += 1
            return 0, True
        if self.start is None:
            self.start = timestamp
        late = (timestamp - self.start) * self.fps - self.slots  # in slots; within one either way is jitter
        if late < -1:
            self.left_out += 1
            return 0, False
        repeats = max(0, round(late))  # the first stamped frame is on time: late is 0 (or below) there
        self.held += repeats
        self.slots += repeats + 1
        return repeats, True

    def note(self, name: str) -> str | None:
        if not (self.held or self.left_out):
            return None
        return (f"{name}: paced to the source's clock at {self.fps:g} frames/s (it plays at the source's speed): "
                f"{self.held} video frame(s) repeat the one before (frames dropped or late), {self.left_out} "
                "frame(s) left out of the video (the source ran faster), every frame's labels kept")


class VideoOutputs(contextlib.ExitStack):
    """The overlay (and mask) videos of one input video; a context manager around their VideoWriters. paced:
    frames are placed on the video's clock by their timestamps (Pacing), else written one after another."""

    def __init__(self, paths: OutputPaths, info: ModelInfo, lut: np.ndarray, fps: float, size: tuple[int, int],
                 codec: str, keep_partial: bool, rle: bool = False, paced: bool = False):
        super().__init__()
        self.paths, self.lut = paths, lut
        self.records = FrameRecords(paths, info, rle)
        self.pacing = Pacing(fps) if paced else None
        self._writers = {kind: VideoWriter(p, fps, size, codec, keep_partial)
                         for kind, p in (("overlay", paths.overlay), ("mask", paths.mask_video)) if p}

    def __enter__(self) -> "VideoOutputs":
        super().__enter__()
        try:
            self.enter_context(self.records)
            for writer in self._writers.values():
                self.enter_context(writer)
        except BaseException as exc:  # a writer that cannot open: the ones already open are removed
            self.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    @property
    def count(self) -> int:
        """Frames segmented and recorded (a paced video may hold more or fewer)."""
        return self.records.count

    def write(self, frame: Frame, labels: np.ndarray, blended: np.ndarray) -> None:
        repeats, placed = self.pacing.place(frame.timestamp) if self.pacing else (0, True)
        for kind, writer in self._writers.items():
            writer.repeat(repeats)
            if placed:
                writer.write(blended if kind == "overlay" else colorize(labels, self.lut))
        self.records.add(f"frame_{self.count:06d}", labels, frame)

    def notes(self) -> list[str]:
        note = self.pacing.note(self.paths.overlay.name) if self.pacing else None
        return [note] if note else []

    def files(self) -> list[Path]:
        return [w.path for w in self._writers.values()] + ([self.paths.masks_dir] if self.paths.masks_dir else [])


class ImageOutputs(contextlib.ExitStack):
    """Overlay images, one per input image, named after it (in a folder, or the one output file)."""

    def __init__(self, paths: OutputPaths, info: ModelInfo, single: bool, rle: bool = False):
        super().__init__()
        self.paths, self.single = paths, single
        self.records = FrameRecords(paths, info, rle)
        self.written: list[Path] = []
        if not single:
            paths.overlay.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> "ImageOutputs":
        super().__enter__()
        self.enter_context(self.records)
        return self

    @property
    def count(self) -> int:
        return len(self.written)

    def write(self, frame: Frame, labels: np.ndarray, blended: np.ndarray) -> None:
        target = self.paths.overlay
        if not self.single or target.is_dir() or not target.suffix:
            target = target / frame.name
        self.written.append(write_image(target, blended))
        self.records.add(frame.name, labels, frame)

    def files(self) -> list[Path]:
        return self.written + ([self.paths.masks_dir] if self.paths.masks_dir else [])

    def notes(self) -> list[str]:
        return []  # images are written one per input, nothing to pace
