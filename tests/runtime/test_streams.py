"""Live network streams against real servers on loopback, started and stopped here: an HTTP MJPEG stream and
an RTSP server are killed mid-stream and restarted; the source reopens the stream, the run goes on, the gap is
reported, and when the server is gone for good the run ends cleanly with valid output."""
from __future__ import annotations

import json
import threading

import pytest

from pspcore.registry import create_runner
from runtime.outputs import OutputPaths
from runtime.pipeline import SegmentOptions, segment_source
from runtime.serve import free_port
from runtime.sources import CaptureSource, Reconnect
from runtime.video import DEFAULT_FPS
from tests.runtime.stream_servers import MjpegServer, RtspServer, rtsp_server_available, wait_for
from tests.runtime.test_video import count_frames

pytestmark = pytest.mark.slow


@pytest.fixture
def runner(tiny_model):
    return create_runner("onnxruntime", tiny_model, threads=1)


def paced_length(lines: list[dict], fps: float | None) -> int:
    """Frames in a video paced to the source's clock (at the source's fps, else the default) from the first
    JSON line's timestamp to the last."""
    return round((lines[-1]["timestamp"] - lines[0]["timestamp"]) * (fps or DEFAULT_FPS)) + 1


def run_through_a_restart(runner, first, restart, tmp_path, before: int = 10, after: int = 10):
    """Segment first.url while a controller kills the server after `before` frames are written, restarts it
    (`restart()` -> the new server), and kills that one for good after `after` more."""
    written, servers, failures = [0], [first], []

    def control():
        try:
            wait_for(lambda: written[0] >= before)
            first.kill()
            servers.append(restart())
            wait_for(lambda: written[0] >= before + after)
            servers[-1].kill()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            failures.append(exc)
            for server in servers:
                server.kill()

    def on_frame(count):
        written[0] = count

    controller = threading.Thread(target=control, daemon=True)
    controller.start()
    out, jsonl = tmp_path / "live.avi", tmp_path / "live.jsonl"
    try:
        with CaptureSource(first.url, Reconnect(tries=3, wait=0.2, stall=1.5)) as source:
            result = segment_source(runner, source, OutputPaths(out, jsonl=jsonl),
                                    SegmentOptions(codec="MJPG", progress=False), on_frame)
    finally:
        controller.join(60)
        for server in servers:
            server.kill()
    assert not failures, failures
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert result.frames_out >= before + after and result.frames_out == len(lines)
    # The video is paced to the stream's clock (the outage included): it lasts as long as the frames' stamps.
    assert abs(count_frames(out) - paced_length(lines, result.video_fps)) <= 1
    assert result.realtime  # a stream's default
    assert len(result.gaps) == 1, result.notes
    assert any("reopened after" in note for note in result.notes)
    assert any("gave up after 3 tries" in note for note in result.notes)
    indices = [line["index"] for line in lines]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    stamps = [line["timestamp"] for line in lines]
    assert stamps == sorted(stamps)  # the reopened stream's clock continues after the gap, never restarts
    return result


def test_http_mjpeg_stream_killed_and_restarted(runner, tmp_path):
    first = MjpegServer().start()
    result = run_through_a_restart(runner, first, lambda: MjpegServer(first.port).start(), tmp_path)
    # Multipart JPEGs carry no timestamps (FFmpeg would number them at 25 fps, the server sends 30): stamped on
    # arrival, fps unknown.
    assert "stream, fps unknown, 64x48" in result.source and result.video_fps is None


def test_rtsp_stream_killed_and_restarted(runner, tmp_path):
    if (why := rtsp_server_available()) is not None:
        pytest.skip(why)
    port = free_port()
    first = RtspServer(port).start()
    result = run_through_a_restart(runner, first, lambda: RtspServer(port).start(), tmp_path)
    assert "30 fps, 64x48" in result.source


def test_ctrl_c_on_a_live_stream_finishes_the_output(tiny_model, tmp_path):
    """psp-infer on an endless stream as a user runs it: SIGINT ends it with the video so far kept playable as
    <name>.partial.<ext> and every JSON line already written valid."""
    import signal
    import subprocess
    import sys

    out, jsonl = tmp_path / "live.avi", tmp_path / "live.jsonl"
    with MjpegServer() as server:
        proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", str(tiny_model), server.url, "-o", str(out),
                                 "--codec", "MJPG", "--jsonl", str(jsonl), "-q"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            wait_for(lambda: proc.poll() is not None or (jsonl.exists() and jsonl.read_text().count("\n") >= 5), 60)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 130, err
    assert "kept the frames so far" in err and not out.exists()
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) >= 5 and abs(count_frames(tmp_path / "live.partial.avi") - paced_length(lines, None)) <= 1
