"""Real-time mode: a live source does not wait for us, so frames pass through a one-frame slot that always
holds the newest decoded frame. A frame decoded while the slot is still full replaces the one there (that one
is dropped and counted); the pipeline takes a frame only when the model is free, so what it segments is never
older than the newest frame decoded at the moment it took it, and latency stays bounded however slow the model."""
from __future__ import annotations

import threading


class Stopped(Exception):
    """Raised inside a stage when another stage failed: leave quietly, the first error is reported."""


class LatestFrame:
    """The newest-frame slot between the decoding thread and the pipeline. Holds at most one frame."""

    def __init__(self, stop: threading.Event):
        self._cond = threading.Condition()
        self._stop = stop
        self._item = None
        self._ended = False
        self.dropped = 0
        self.newest_index: int | None = None  # of the newest frame ever put: what a taken frame is checked against

    def put(self, frame) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1  # never taken: a newer frame exists
            self._item = frame
            self.newest_index = frame.index
            self._cond.notify_all()

    def end(self) -> None:
        """The source is finished: `take` returns what is left, then None."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def take(self):
        """The newest frame (waiting for one), or None once the source has ended and the slot is empty."""
        with self._cond:
            while self._item is None and not self._ended:
                if self._stop.is_set():
                    raise Stopped
                self._cond.wait(0.1)
            if self._stop.is_set():
                raise Stopped
            item, self._item = self._item, None
            return item
