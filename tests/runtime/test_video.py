"""VideoReader and VideoWriter on small generated videos: every bad input of issue 7 is a case here."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from pspcore.errors import InputError, PSPError
from runtime.video import VideoReader, VideoWriter, partial_name
from tests.runtime.conftest import write_video


def count_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def corrupt_frame(src, dst, index: int):
    """Wipe the start of one MJPG frame's JPEG data, so exactly that frame fails to decode."""
    data = bytearray(src.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    data[starts[index]: starts[index] + 200] = bytes(200)
    dst.write_bytes(bytes(data))
    return dst


def with_header_count(src, dst, frames: int):
    """An AVI whose headers (avih total frames, strh length) claim `frames` frames."""
    data = bytearray(src.read_bytes())
    avih, strh = data.find(b"avih"), data.find(b"strh")
    data[avih + 24: avih + 28] = struct.pack("<I", frames)
    data[strh + 40: strh + 44] = struct.pack("<I", frames)
    dst.write_bytes(bytes(data))
    return dst


def test_reads_every_frame(tiny_video):
    with VideoReader(tiny_video) as reader:
        frames = list(reader)
    assert len(frames) == 30 and reader.skipped == 0 and reader.header_frames == 30
    assert reader.size == (64, 48) and reader.fps == pytest.approx(10.0)
    assert frames[0].shape == (48, 64, 3) and not np.array_equal(frames[0], frames[1])


def test_corrupt_frame_mid_stream_is_skipped_and_counted(tiny_video, tmp_path):
    bad = corrupt_frame(tiny_video, tmp_path / "bad.avi", 10)
    cap = cv2.VideoCapture(str(bad))
    oks = [cap.read()[0] for _ in range(30)]
    assert oks.index(False) == 10 and all(oks[11:30 - 1])  # what we think the corruption does, checked
    reader = VideoReader(bad)
    assert len(list(reader)) == 29 and reader.skipped == 1
    assert "1 corrupt frame skipped" in reader.report()


def test_run_of_corrupt_frames_is_tolerated(tiny_video, tmp_path):
    bad = tiny_video
    for i, index in enumerate((5, 6, 7)):
        bad = corrupt_frame(bad, tmp_path / f"bad{i}.avi", index)
    reader = VideoReader(bad)
    assert len(list(reader)) == 27 and reader.skipped == 3


@pytest.mark.parametrize("claimed", [100, 10, 0])
def test_wrong_header_count_neither_stops_early_nor_hangs(tiny_video, tmp_path, claimed):
    video = with_header_count(tiny_video, tmp_path / "header.avi", claimed)
    reader = VideoReader(video)
    assert len(list(reader)) == 30 and reader.skipped == 0
    if claimed:
        assert reader.header_frames == claimed and f"the header said {claimed}" in reader.report()


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="video not found"):
        VideoReader(tmp_path / "nope.mp4")
    with pytest.raises(InputError, match="is not a file"):
        VideoReader(tmp_path)


def test_not_a_video(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 100)
    with pytest.raises(InputError, match="not a video OpenCV can read"):
        VideoReader(fake)


def test_zero_length_videos(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="zero-length"):
        VideoReader(empty)
    header_only = write_video(tmp_path / "none.avi", frames=0)
    with pytest.raises(InputError, match="no frame could be decoded"):
        VideoReader(header_only)


def test_writer_round_trip_and_fps(tmp_path):
    out = tmp_path / "out.avi"
    with VideoWriter(out, 12.0, (64, 48), codec="MJPG") as writer:
        for i in range(7):
            writer.write(np.full((48, 64, 3), i * 30, np.uint8))
    reader = VideoReader(out)
    assert len(list(reader)) == 7 and reader.fps == pytest.approx(12.0)
    assert [p.name for p in tmp_path.iterdir()] == ["out.avi"]  # no temporary left behind


def test_unavailable_codec_falls_back_with_a_notice(tmp_path, capsys):
    out = tmp_path / "h264.mp4"
    with VideoWriter(out, 10, (64, 48), codec="avc1") as writer:
        writer.write(np.zeros((48, 64, 3), np.uint8))
    if writer.codec == "avc1":
        pytest.skip("this OpenCV writes H.264")
    assert writer.codec == "mp4v" and "codec avc1 is not available" in capsys.readouterr().err
    assert count_frames(out) == 1


def test_wrong_frame_size_is_refused_and_nothing_is_left(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(PSPError, match=r"is \(48, 60, 3\) uint8"):
        with VideoWriter(out, 10, (64, 48)) as writer:
            writer.write(np.zeros((48, 64, 3), np.uint8))
            writer.write(np.zeros((48, 60, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        with VideoWriter(blocker / "out.mp4", 10, (64, 48)):
            pass
    with pytest.raises(InputError, match="cannot write a .xyz video"):
        with VideoWriter(tmp_path / "out.xyz", 10, (64, 48)):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("keep", [True, False])
def test_ctrl_c_keeps_a_playable_partial_or_nothing(tmp_path, keep):
    out = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out, 10, (64, 48), keep_partial=keep) as writer:
            for i in range(5):
                writer.write(np.full((48, 64, 3), i * 40, np.uint8))
            raise KeyboardInterrupt
    assert not out.exists()
    if keep:
        assert writer.partial_path == partial_name(out) == tmp_path / "out.partial.mp4"
        assert count_frames(writer.partial_path) == 5
    else:
        assert list(tmp_path.iterdir()) == []
