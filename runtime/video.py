"""Frames in and out: a video reader that survives corrupt frames and wrong headers, a video writer that
checks its codec and never leaves a corrupt file at the final name, and image files/folders as frame sources."""
from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from pspcore.errors import InputError, PSPError, notice_once
from pspcore.files import atomic_output, require_file

FALLBACK_CODECS = ("mp4v", "MJPG")
DEFAULT_FPS = 25.0


class VideoReader:
    """Iterate a video's frames (BGR uint8). A frame that fails to decode is skipped and counted, not taken
    for the end: within the header's frame count up to `max_failures` failures in a row are tolerated, past
    it (headers can understate) `tail_failures`; so a wrong header neither stops early nor hangs."""

    def __init__(self, path: str | os.PathLike, max_failures: int = 25, tail_failures: int = 3):
        self.path = require_file(path, "video")
        if self.path.stat().st_size == 0:
            raise InputError(f"{self.path}: empty file (zero-length video)")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise InputError(f"{self.path}: not a video OpenCV can read")
        self.header_frames = max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and math.isfinite(fps) and 0 < fps <= 1000 else DEFAULT_FPS
        self.max_failures, self.tail_failures = max_failures, tail_failures
        self.decoded = self.skipped = 0
        self._frames = self._decode()
        first = next(self._frames, None)
        if first is None:
            self.close()
            raise InputError(f"{self.path}: no frame could be decoded (zero-length or unreadable video)")
        self._first: np.ndarray | None = first
        self.size = (first.shape[1], first.shape[0])  # (W, H) of the frames as decoded, not as the header says

    def _decode(self) -> Iterator[np.ndarray]:
        failures = 0
        while True:
            ok, frame = self._cap.read()
            if ok:
                self.skipped += failures  # failures followed by a good frame were corrupt frames
                failures = 0
                self.decoded += 1
                yield frame
                continue
            failures += 1
            within_header = self.decoded + self.skipped + failures <= self.header_frames
            if failures >= (self.max_failures if within_header else self.tail_failures):
                return

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._frames

    def report(self) -> str:
        """One line on what was read, including skipped frames and a header that did not match."""
        text = f"{self.decoded} frames decoded"
        if self.skipped:
            text += f", {self.skipped} corrupt frame{'s' * (self.skipped != 1)} skipped"
        if self.header_frames and self.header_frames != self.decoded + self.skipped:
            text += f" (the header said {self.header_frames})"
        return text

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def partial_name(path: str | os.PathLike) -> Path:
    """out.mp4 -> out.partial.mp4: where an interrupted video is kept, playable but clearly unfinished."""
    p = Path(path)
    return p.with_name(f"{p.stem}.partial{p.suffix}")


class VideoWriter:
    """A context manager writing BGR frames of one size to `path` through a temporary file. On success it
    is renamed to `path`; on Ctrl-C the frames so far are finalised as `<name>.partial.<ext>` (or removed,
    keep_partial=False); on any other failure removed. The codec falls back to mp4v/MJPG with a notice."""

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int], codec: str = "mp4v",
                 keep_partial: bool = True):
        self.path, self.fps, self.size = Path(path), float(fps), (int(size[0]), int(size[1]))
        self.requested_codec, self.codec = codec, codec
        self.keep_partial = keep_partial
        self.frames = 0
        self._last: np.ndarray | None = None
        self.partial_path: Path | None = None
        self._writer = None
        self._output = contextlib.ExitStack()

    def __enter__(self) -> "VideoWriter":
        if not self.path.suffix:
            raise InputError(f"{self.path}: give the output video an extension (.mp4, .avi) for its container")
        self._tmp = self._output.enter_context(atomic_output(self.path, suffix=self.path.suffix))
        try:
            self._writer = self._open()
        except BaseException as exc:  # leave through the failure path: remove the temporary, never commit it
            self._output.__exit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    def _open(self):
        tried = []
        for codec in dict.fromkeys((self.requested_codec, *FALLBACK_CODECS)):
            if len(codec) != 4:
                raise InputError(f"a codec is a four-character code such as mp4v or MJPG, got {codec!r}")
            writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*codec), self.fps, self.size)
            if writer.isOpened():
                if tried:
                    notice_once(f"codec:{self.path}", f"{self.path.name}: codec {tried[0]} is not available "
                                f"here; wrote {codec} instead")
                self.codec = codec
                return writer
            writer.release()
            tried.append(codec)
        raise InputError(f"{self.path}: cannot write a {self.path.suffix} video with {', '.join(tried)}")

    def write(self, frame: np.ndarray) -> None:
        w, h = self.size
        if frame.shape != (h, w, 3) or frame.dtype != np.uint8:
            # OpenCV would accept it and write an unreadable file without a word.
            raise PSPError(f"{self.path.name}: frame {self.frames} is {frame.shape} {frame.dtype}, "
                           f"the video is ({h}, {w}, 3) uint8")
        self._writer.write(frame)
        self._last = frame
        self.frames += 1

    def repeat(self, times: int) -> None:
        """Write the last frame again `times` times (a constant-rate video holding it through a gap)."""
        for _ in range(times if self.frames else 0):
            self._writer.write(self._last)
            self.frames += 1

    def __exit__(self, exc_type, exc, tb):
        self._writer.release()  # finalises the container, so even an interrupted file is playable
        if exc_type is KeyboardInterrupt and self.keep_partial and self.frames:
            self.partial_path = partial_name(self.path)
            os.replace(self._tmp, self.partial_path)
        return self._output.__exit__(exc_type, exc, tb)


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: not an image OpenCV can read")
    return image


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Encode by the path's extension and write atomically."""
    path = Path(path)
    try:
        ok, data = cv2.imencode(path.suffix or ".png", image)
    except cv2.error:
        ok = False
    if not ok:
        raise InputError(f"{path}: OpenCV cannot encode a {path.suffix or 'suffix-less'} image")
    with atomic_output(path, suffix=path.suffix) as tmp:
        tmp.write_bytes(data.tobytes())
    return path
