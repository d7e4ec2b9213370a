"""Where frames come from: one `Source` interface with a reader per kind (video file, images from a folder, glob
or list file, a camera, a network stream through OpenCV's FFmpeg, raw frames on standard input). Every source
says its fps and frame size or that it does not know them; live ones (cameras, streams) do not wait for us, and
a stream that drops is reopened with bounded back-off (`Reconnect`)."""
from __future__ import annotations

import glob
import math
import os
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pspcore.errors import InputError, PSPError
from pspcore.files import IMAGE_SUFFIXES, is_image, list_images, read_list_file
from pspcore.triton_protocol import url_scheme
from runtime.video import VideoReader, read_image

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")


@dataclass
class Frame:
    image: np.ndarray  # BGR uint8, H x W x 3
    index: int  # position in the source, counting frames dropped later
    timestamp: float | None  # seconds on the source's clock (stream time, or position in the file)
    decoded_at: float  # time.perf_counter() when it was decoded: where latency starts
    name: str | None = None  # image sources: the file's name


@dataclass
class Reconnect:
    """How a live stream that stalls or drops is reopened: `tries` attempts, waiting `wait` seconds before the
    first and doubling up to `max_wait`; a read that delivers nothing for `stall` seconds counts as a drop."""
    tries: int = 5
    wait: float = 0.5
    max_wait: float = 8.0
    stall: float = 10.0

    def delays(self) -> Iterator[float]:
        for attempt in range(self.tries):
            yield min(self.max_wait, self.wait * 2 ** attempt)


class Source(ABC):
    """An iterable of `Frame`s, closed after use (a context manager). `fps`/`size` (W, H) are None when the
    source does not know them; `live` sources produce frames whether or not we keep up."""

    kind = "source"
    live = False

    def __init__(self, name: str):
        self.name = name
        self.fps: float | None = None
        self.size: tuple[int, int] | None = None
        self.total: int | None = None  # frames expected, when known
        self.decoded = self.skipped = 0
        self.notes: list[str] = []
        self._interrupted = threading.Event()

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """The frames, in order."""

    def interrupt(self) -> None:
        """Ask a reader waiting to reconnect to give up now (the run is stopping)."""
        self._interrupted.set()

    def describe(self) -> str:
        fps = f"{self.fps:g} fps" if self.fps else "fps unknown"
        size = f"{self.size[0]}x{self.size[1]}" if self.size else "frame size unknown"
        return f"{self.name} ({self.kind}, {fps}, {size})"

    def report(self) -> str | None:
        """A line on what went wrong while reading (corrupt frames, unreadable images), or None."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoFileSource(Source):
    """A video file, every frame, corrupt ones skipped and counted (VideoReader)."""

    kind = "video"

    def __init__(self, path: str | os.PathLike):
        super().__init__(str(path))
        self.reader = VideoReader(path)
        self.fps, self.size = self.reader.fps, self.reader.size
        self.total = self.reader.header_frames or None

    def __iter__(self) -> Iterator[Frame]:
        for image in self.reader:
            self.decoded, self.skipped = self.reader.decoded, self.reader.skipped
            index = self.decoded + self.skipped - 1  # its place in the file, corrupt frames before it counted
            yield Frame(image, index, index / self.fps, time.perf_counter())

    def report(self) -> str | None:
        """A line when the file was not what its header said (corrupt frames, a wrong frame count)."""
        r = self.reader
        if r.skipped or (r.header_frames and r.header_frames != r.decoded):
            return f"{Path(self.name).name}: {r.report()}"
        return None

    def close(self) -> None:
        self.reader.close()


class ImageSource(Source):
    """Image files (one, a folder's, a glob's or a list file's), in order; an unreadable one among several is
    skipped and named, not fatal. Image sources have no fps; their size is each image's own."""

    kind = "images"

    def __init__(self, name: str, files: list[Path], single: bool = False):
        super().__init__(name)
        if not files:
            raise InputError(f"{name}: matches no images ({', '.join(IMAGE_SUFFIXES)})")
        self.files, self.single = files, single
        self.total = len(files)
        self.unreadable: list[str] = []

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.files):
            try:
                image = read_image(path)
            except InputError:
                if len(self.files) == 1:
                    raise
                self.unreadable.append(path.name)  # one bad file in a folder should not cost the rest
                self.skipped += 1
                continue
            self.decoded += 1
            yield Frame(image, index, None, time.perf_counter(), path.name)

    def report(self) -> str | None:
        if not self.unreadable:
            return None
        more = len(self.unreadable) - 5
        return f"skipped unreadable images: {', '.join(self.unreadable[:5])}" + (f" (+{more} more)" if more > 0
                                                                                 else "")


class CaptureSource(Source):
    """A camera (index or /dev/videoN) or a network stream (anything OpenCV's FFmpeg opens: RTSP, RTMP, HTTP
    MJPEG, HLS). Live: frames are stamped on the stream's clock when it has one, else on ours. A stream that
    stops delivering is reopened per `reconnect`; each gap is recorded in `gaps` (seconds) and noted."""

    live = True

    def __init__(self, target: str | int, reconnect: Reconnect | None = None, camera: bool = False):
        super().__init__(str(target))
        self.target = target
        self.kind = "camera" if camera or isinstance(target, int) else "stream"
        self.reconnect = reconnect or Reconnect()
        self.gaps: list[float] = []
        self._cap = self._open()
        if self._cap is None:
            what = "camera" if self.kind == "camera" else "stream"
            raise PSPError(f"{self.name}: cannot open the {what} (is it there, and is the address right?)")
        self._first = self._read()
        if self._first is None:
            self.close()
            raise PSPError(f"{self.name}: opened, but no frame arrived within {self.reconnect.stall:g} s")
        # HTTP MJPEG (JPEGs in a multipart response) carries no timestamps: FFmpeg numbers its frames at an assumed
        # 25 fps, which is neither the stream's rate nor its clock. Such a stream is stamped on arrival, fps unknown.
        codec = int(self._cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little")
        self.untimed = self.kind == "stream" and url_scheme(str(target)) in ("http", "https") and codec == b"MJPG"
        fps = None if self.untimed else self._cap.get(cv2.CAP_PROP_FPS)
        # FFmpeg reports 1000 or 90000 (a time base, not a rate) for streams that do not say.
        self.fps = fps if fps and math.isfinite(fps) and 0 < fps <= 240 else None
        self.size = (self._first.shape[1], self._first.shape[0])
        self._opened_at = time.perf_counter()
        self._offset, self._last_stamp, self._resume_at = 0.0, 0.0, None

    def _open(self):
        ms = int(self.reconnect.stall * 1000)
        if self.kind == "camera":
            cap = cv2.VideoCapture(self.target)
        else:
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG,
                                   [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def _read(self) -> np.ndarray | None:
        ok, image = self._cap.read()
        return image if ok and image is not None and image.size else None

    def _stamp(self, image: np.ndarray) -> Frame:
        now = time.perf_counter()
        position = -1.0 if self.untimed else self._cap.get(cv2.CAP_PROP_POS_MSEC)  # presentation time; -1: none
        clock = position / 1000 if position >= 0 else now - self._opened_at
        if self._resume_at is not None:  # a reopened stream's clock starts again: continue after the gap
            self._offset, self._resume_at = self._resume_at - clock, None
        self._last_stamp = max(self._last_stamp, clock + self._offset)  # never backwards for a consumer
        self.decoded += 1
        return Frame(image, self.decoded - 1, self._last_stamp, now)

    def __iter__(self) -> Iterator[Frame]:
        image, self._first = self._first, None
        while image is not None:
            yield self._stamp(image)
            if self._interrupted.is_set():
                return
            image = self._read()
            if image is None:
                image = self._reopen()

    def _reopen(self) -> np.ndarray | None:
        """After a failed read: reopen with back-off until a frame arrives, and return it; None: gave up (or the
        run is stopping)."""
        lost = time.perf_counter()
        self._cap.release()
        for attempt, delay in enumerate(self.reconnect.delays(), 1):
            if self._interrupted.wait(delay):
                return None
            cap = self._open()
            if cap is None:
                continue
            self._cap = cap
            image = self._read()
            if image is not None:
                gap = time.perf_counter() - lost
                self.gaps.append(gap)
                self._resume_at = self._last_stamp + gap
                self.notes.append(f"{self.name}: lost after frame {self.decoded - 1}, reopened after "
                                  f"{gap:.1f} s ({attempt} {'try' if attempt == 1 else 'tries'})")
                return image
            cap.release()
        self.notes.append(f"{self.name}: lost after frame {self.decoded - 1}; gave up after "
                          f"{self.reconnect.tries} tries over {time.perf_counter() - lost:.1f} s")
        return None

    def close(self) -> None:
        self._cap.release()

class RawSource(Source):
    """Raw BGR24 frames of a given size back to back on a binary stream (standard input for `-`), e.g. from
    `ffmpeg -i ... -f rawvideo -pix_fmt bgr24 -`. A pipe waits for its reader, so it is not live; its fps is
    unknown unless given. A short final frame is reported and ignored."""

    kind = "raw"

    def __init__(self, stream, size: tuple[int, int] | None, fps: float | None = None, name: str = "-"):
        super().__init__(name)
        if not size:
            raise InputError("raw frames on standard input need --frame-size WxH (their width and height)")
        self.stream, self.size, self.fps = stream, (int(size[0]), int(size[1])), fps

    def __iter__(self) -> Iterator[Frame]:
        w, h = self.size
        frame_bytes = w * h * 3
        while True:
            data = self._read_exactly(frame_bytes)
            if len(data) < frame_bytes:
                if data:
                    self.notes.append(f"{self.name}: the input ended inside a frame ({len(data)} of {frame_bytes} "
                                      f"bytes of a {w}x{h} BGR frame); ignored it")
                return
            index = self.decoded
            self.decoded += 1
            yield Frame(np.frombuffer(data, np.uint8).reshape(h, w, 3), index,
                        index / self.fps if self.fps else None, time.perf_counter())

    def _read_exactly(self, n: int) -> bytes:
        chunks, have = [], 0
        while have < n:
            chunk = self.stream.read(n - have)
            if not chunk:
                break
            chunks.append(chunk)
            have += len(chunk)
        return b"".join(chunks)


def _camera(spec: str) -> str | int | None:
    """A camera index (`0`) or a V4L2 device path (`/dev/video0`, or a udev name under /dev/v4l/)."""
    if spec.isdigit():
        return int(spec)
    if spec.startswith(("/dev/video", "/dev/v4l/")):
        return spec
    return None


def open_source(spec: str | os.PathLike, *, frame_size: tuple[int, int] | None = None,
                reconnect: Reconnect | None = None, stdin=None) -> Source:
    """The reader for what `spec` names: `-` (raw frames on stdin), a camera index or /dev/videoN, a stream URL,
    a folder, a glob, a list file of images (`.txt`, one path a line), an image, else a video file."""
    text = str(spec)
    if text == "-":
        return RawSource(stdin if stdin is not None else sys.stdin.buffer, frame_size)
    if frame_size:
        raise InputError("--frame-size is for raw frames on standard input ('-') only")
    camera = _camera(text)
    if camera is not None:
        if isinstance(camera, str) and not os.path.exists(camera):
            raise InputError(f"camera not found: {camera} (no such device)")
        return CaptureSource(camera, reconnect, camera=True)
    scheme = (url_scheme(text) or "").lower()
    if scheme in STREAM_SCHEMES:
        return CaptureSource(text, reconnect)
    if scheme:
        raise InputError(f"{text}: unknown stream scheme {scheme}:// (psp-infer reads "
                         f"{', '.join(s + '://' for s in STREAM_SCHEMES)})")
    path = Path(text)
    if path.is_dir():
        return image_source(path)
    if not path.exists() and glob.has_magic(text):
        files = sorted(Path(f) for f in glob.glob(text, recursive=True) if is_image(f))
        return ImageSource(text, files)
    if path.suffix.lower() == ".txt":
        images = [row[0] for row in read_list_file(path, fields=(1, 2), what="image list")]
        others = [p for p in images if not is_image(p)]
        if others:
            raise InputError(f"{path}: an image list names one image a line, but it lists {others[0].name} "
                             f"({len(others)} of {len(images)} entries are not image files)")
        return ImageSource(text, images)
    if is_image(path):
        return image_source(path)
    return VideoFileSource(path)


def image_source(path: str | os.PathLike) -> ImageSource:
    """One image file, or a folder's images in order."""
    return ImageSource(str(path), list_images(path), single=not Path(path).is_dir())
