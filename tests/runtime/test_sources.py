"""Every kind of source behind one interface: what each says about its fps and frame size, the frames it gives,
and the one-line errors for sources that are not there (issue 29)."""
from __future__ import annotations

import io
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from pspcore.errors import InputError, PSPError
from runtime.cli import main
from runtime.sources import CaptureSource, ImageSource, RawSource, Reconnect, VideoFileSource, open_source
from tests.runtime.test_video import count_frames


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    for i in range(3):
        cv2.imwrite(str(folder / f"img{i}.png"), np.full((20, 30, 3), 40 * i, np.uint8))
    (folder / "notes.md").write_text("not an image")
    return folder


def test_video_file_knows_its_fps_size_and_timestamps(tiny_video):
    with open_source(tiny_video) as source:
        assert isinstance(source, VideoFileSource) and not source.live
        assert (source.fps, source.size, source.total) == (10.0, (64, 48), 30)
        frames = list(source)
    assert [f.index for f in frames] == list(range(30))
    assert frames[3].timestamp == pytest.approx(0.3) and frames[0].image.shape == (48, 64, 3)
    assert "10 fps, 64x48" in source.describe()


def test_folder_glob_and_list_file_give_the_same_images(image_folder, tmp_path):
    listing = tmp_path / "images.txt"
    listing.write_text("# two of them\n" + "\n".join(str(image_folder / f"img{i}.png") for i in (2, 0)) + "\n")
    folder = open_source(image_folder)
    glob_source = open_source(str(image_folder / "img[01].png"))
    listed = open_source(listing)
    assert all(isinstance(s, ImageSource) for s in (folder, glob_source, listed))
    assert [f.name for f in folder] == ["img0.png", "img1.png", "img2.png"]
    assert [f.name for f in glob_source] == ["img0.png", "img1.png"]
    assert [(f.name, int(f.image[0, 0, 0])) for f in listed] == [("img2.png", 80), ("img0.png", 0)]
    assert folder.fps is None and "fps unknown, frame size unknown" in folder.describe()
    with pytest.raises(InputError, match="matches no images"):
        open_source(str(tmp_path / "nothing-*.png"))


def raw_bytes(count: int, size=(6, 4)) -> bytes:
    w, h = size
    return b"".join(np.full((h, w, 3), i, np.uint8).tobytes() for i in range(count))


def test_raw_frames_from_a_stream():
    data = raw_bytes(5) + b"\x01" * 10  # five frames and the start of a sixth
    source = open_source("-", frame_size=(6, 4), stdin=io.BufferedReader(io.BytesIO(data), buffer_size=7))
    assert isinstance(source, RawSource) and source.size == (6, 4) and source.fps is None
    frames = list(source)
    assert [int(f.image[0, 0, 0]) for f in frames] == [0, 1, 2, 3, 4] and frames[0].image.shape == (4, 6, 3)
    assert source.notes and "ended inside a frame (10 of 72 bytes" in source.notes[0]
    with pytest.raises(InputError, match="--frame-size"):
        open_source("-")
    with pytest.raises(InputError, match="for raw frames on standard input"):
        open_source("clip.mp4", frame_size=(6, 4))


def test_missing_camera_and_unknown_sources_fail_in_one_line(tiny_model, tmp_path):
    with pytest.raises(InputError, match=r"camera not found: /dev/video97 \(no such device\)"):
        open_source("/dev/video97")
    with pytest.raises(InputError, match="unknown stream scheme ftp://"):
        open_source("ftp://127.0.0.1/clip.mp4")
    result = CliRunner().invoke(main, [str(tiny_model), "/dev/video97", "-o", str(tmp_path / "out.mp4")])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if not line.startswith("notice:")]
    assert errors == ["error: camera not found: /dev/video97 (no such device)"]
    assert list(tmp_path.iterdir()) == []
    result = CliRunner().invoke(main, [str(tiny_model), "97", "-o", str(tmp_path / "out.mp4")])
    assert result.exit_code == 1 and "error: 97: cannot open the camera" in result.output
    result = CliRunner().invoke(main, [str(tiny_model), "/dev/video97", "-o", str(tmp_path / "out.mp4"),
                                       "--jsonl-labels"])
    assert result.exit_code == 2 and "give --jsonl PATH too" in result.output


def test_a_stream_nobody_serves_is_one_line(tmp_path):
    from runtime.serve import free_port

    with pytest.raises(PSPError, match="cannot open the stream"):
        CaptureSource(f"http://127.0.0.1:{free_port()}/none.mjpg", Reconnect(stall=1))


def test_reconnect_back_off_is_bounded():
    assert list(Reconnect(tries=6, wait=0.5, max_wait=3).delays()) == [0.5, 1, 2, 3, 3, 3]
    assert list(Reconnect(tries=0).delays()) == []


@pytest.mark.slow
def test_raw_frames_on_standard_input(tiny_model, tmp_path):
    """`producer | psp-infer MODEL - --frame-size WxH`: the real standard input of a real process."""
    out, jsonl = tmp_path / "out.avi", tmp_path / "frames.jsonl"
    proc = subprocess.run([sys.executable, "-m", "runtime.cli", str(tiny_model), "-", "--frame-size", "6x4",
                           "-o", str(out), "--codec", "MJPG", "--jsonl", str(jsonl), "-q"],
                          input=raw_bytes(7), capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert count_frames(out) == 7 and len(jsonl.read_text().splitlines()) == 7
    assert b"does not say its fps; the output video is 25 fps" in proc.stderr
    assert b"7 frames in, 7 out" in proc.stdout


def test_a_corrupt_frame_keeps_its_place_in_the_file(tiny_video, tmp_path):
    from tests.runtime.test_video import corrupt_frame

    with open_source(corrupt_frame(tiny_video, tmp_path / "bad.avi", 10)) as source:
        frames = list(source)
    assert [f.index for f in frames] == [*range(10), *range(11, 30)] and source.skipped == 1
    assert frames[10].timestamp == pytest.approx(1.1) and "1 corrupt frame skipped" in source.report()
