"""Real-time mode with a deliberately slow model: stale frames are dropped and counted, the slot stays one frame,
and a frame taken is always the newest decoded at that moment. The slowness is made by construction (the model
waits until the source has decoded k more frames, the source waits until the model has begun), so the test
asserts exact frame indices and never a clock."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from pspcore.registry import create_runner
from runtime.outputs import OutputPaths
from runtime.pipeline import SegmentOptions, segment_source
from runtime.realtime import LatestFrame
from runtime.sources import Frame, Source
from runtime.video import VideoReader
from tests.runtime.test_video import count_frames

WAIT = 20  # seconds: only a bug ever waits this long
GRACE = 0.1  # seconds a gated source gives a wrong pipeline to take a frame while the model is busy


class GatedSource(Source):
    """A live source of 1 + k*m frames. After frame 0, k, 2k, ... it waits until the model has begun on a frame;
    after each further k frames it lets the running inference finish (`advanced`)."""

    kind, live = "stream", True

    def __init__(self, k: int, m: int, gated: bool = True):
        super().__init__("gated://test")
        self.fps, self.size, self.k, self.count, self.gated = 10.0, (40, 30), k, 1 + k * m, gated
        self.started, self.advanced = threading.Semaphore(0), threading.Semaphore(0)
        self.takes: list = []  # the `takes` fixture's record, when a test gives it

    def __iter__(self):
        for i in range(self.count):
            image = np.full((30, 40, 3), (i * 9) % 256, np.uint8)
            self.decoded += 1
            yield Frame(image, i, i / self.fps, time.perf_counter())
            if self.gated and i % self.k == 1:
                # While the model runs, a pipeline that wrongly takes frames would take this one now: give it
                # the chance (a bug's window, not a timing assertion; the correct pipeline just waits it out).
                taken = len(self.takes)
                deadline = time.monotonic() + GRACE
                while len(self.takes) == taken and time.monotonic() < deadline:
                    time.sleep(0.005)
            if self.gated and i % self.k == 0:  # frame i is in the slot now
                if i:
                    self.advanced.release()
                assert self.started.acquire(timeout=WAIT), "the model never took the next frame"
        self.advanced.release()  # the source ended: the last inference may finish


class SlowRunner:
    """Wraps a real runner: each inference begins (telling the source) and then waits for the source."""

    busy = False  # an inference is running: real-time mode takes no frame then (it would go stale waiting)

    def __init__(self, runner, source: GatedSource):
        self._runner, self._source = runner, source

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def infer(self, batch):
        SlowRunner.busy = True
        self._source.started.release()
        assert self._source.advanced.acquire(timeout=WAIT), "the source never advanced"
        try:
            return self._runner.infer(batch)
        finally:
            SlowRunner.busy = False


@pytest.fixture
def runner(tiny_model):
    return create_runner("onnxruntime", tiny_model, threads=1)


@pytest.fixture
def takes(monkeypatch):
    """(index taken, newest index decoded at that moment, the model busy) for every frame taken from the slot."""
    seen, take = [], LatestFrame.take

    def recording(self):
        frame = take(self)
        if frame is not None:
            seen.append((frame.index, self.newest_index, SlowRunner.busy))
        return frame

    monkeypatch.setattr(LatestFrame, "take", recording)
    return seen


def test_slow_model_on_a_live_source_drops_stale_frames(runner, tmp_path, takes):
    k, m = 4, 5
    source = GatedSource(k, m)
    source.takes = takes
    jsonl = tmp_path / "frames.jsonl"
    result = segment_source(SlowRunner(runner, source), source, OutputPaths(tmp_path / "out.avi", jsonl=jsonl),
                            SegmentOptions(codec="MJPG", progress=False))
    kept = [json.loads(line)["index"] for line in jsonl.read_text().splitlines()]
    assert result.realtime  # the default for a live source
    assert kept == list(range(0, 1 + k * m, k))  # FIFO would give 0, 1, 2, ...
    assert result.dropped == (k - 1) * m == result.frames_in - result.frames_out
    assert all(taken == newest and not busy for taken, newest, busy in takes) and len(takes) == m + 1
    # The video is paced to the source's clock (10 fps, like the source): a dropped frame's slot holds the frame
    # before it, so the video lasts as long as the source did, not (m + 1) frames.
    means = [float(image.mean()) for image in VideoReader(tmp_path / "out.avi")]
    assert len(means) == k * m + 1
    for slot, mean in enumerate(means):
        assert mean == pytest.approx(means[slot - slot % k], abs=1.0), slot  # holds the frame taken last
    assert all(abs(means[i] - means[i - k]) > 5 for i in range(k, k * m + 1, k))  # a new frame each k slots
    assert "dropped (real-time)" in result.summary()
    assert any(f"{(k - 1) * m} video frame(s) repeat the one before" in note for note in result.notes)


def test_the_slot_holds_one_frame_and_counts_what_it_replaces():
    slot = LatestFrame(threading.Event())
    for i in range(5):
        slot.put(Frame(np.zeros((1, 1, 3), np.uint8), i, None, 0.0))
    slot.end()
    assert slot.take().index == 4 and slot.dropped == 4
    assert slot.take() is None


def test_without_real_time_every_frame_of_a_live_source_is_kept(runner, tmp_path, takes):
    source = GatedSource(4, 5, gated=False)
    source.advanced.release(source.count)  # the model never waits
    result = segment_source(SlowRunner(runner, source), source, tmp_path / "out.avi",
                            SegmentOptions(codec="MJPG", progress=False, realtime=False, batch=2))
    assert not result.realtime and result.dropped == 0 and takes == []
    assert result.frames_out == 21 == count_frames(tmp_path / "out.avi")


def test_pacing_holds_late_frames_and_leaves_out_early_ones():
    """The video's clock: at 10 frames/s, a frame 0.3 s after the last takes 3 slots (2 repeats of the last);
    jitter within a slot changes nothing; a source faster than the video loses frames from the video only."""
    from runtime.outputs import Pacing

    pacing = Pacing(10.0)
    placed = [pacing.place(t) for t in (5.0, 5.1, 5.4, 5.52, 5.58)]
    assert placed == [(0, True), (0, True), (2, True), (0, True), (0, True)]
    assert (pacing.slots, pacing.held, pacing.left_out) == (7, 2, 0)
    fast = Pacing(10.0)  # a 20 frames/s source: every other frame is more than a slot early
    kept = [fast.place(i / 20)[1] for i in range(41)]
    assert abs(fast.slots - 21) <= 1 and fast.held == 0  # 2 s of video: within a slot of 21 frames
    assert kept.count(True) == fast.slots and fast.left_out == 41 - fast.slots
    assert Pacing(10.0).note("v.mp4") is None and "2 video frame(s) repeat" in pacing.note("v.mp4")
    unstamped = Pacing(10.0)
    assert [unstamped.place(None) for _ in range(3)] == [(0, True)] * 3 and unstamped.note("v") is None
