"""--jsonl: one line per frame as it finishes, whose run-length-encoded label maps decode to exactly the label
PNGs of --masks-dir; and the per-stage timing that the summary and --json carry."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from pspcore.registry import create_runner
from runtime.cli import main
from runtime.outputs import OutputPaths
from runtime.pipeline import SegmentOptions, segment
from runtime.postprocess import rle_decode, rle_encode
from runtime.stages import STAGES


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rle_round_trip_and_garbage():
    labels = np.array([[0, 0, 3], [3, 3, 1]], np.uint8)
    rle = rle_encode(labels)
    assert rle == {"size": [2, 3], "values": [0, 3, 1], "counts": [2, 3, 1]}
    assert np.array_equal(rle_decode(rle), labels)
    with pytest.raises(ValueError, match="covers 5 pixels"):
        rle_decode({**rle, "counts": [2, 2, 1]})


def test_jsonl_masks_decode_to_the_png_label_maps(tiny_model, tiny_video, tmp_path):
    runner = create_runner("onnxruntime", tiny_model, threads=1)
    masks, jsonl = tmp_path / "masks", tmp_path / "frames.jsonl"
    result = segment(runner, tiny_video, OutputPaths(tmp_path / "out.avi", masks_dir=masks, jsonl=jsonl),
                     SegmentOptions(batch=3, codec="MJPG", progress=False, jsonl_rle=True))
    lines = read_lines(jsonl)
    assert [line["index"] for line in lines] == list(range(30)) == [line["frame"] for line in lines]
    assert lines[4]["timestamp"] == pytest.approx(0.4) and all(line["latency_ms"] > 0 for line in lines)
    for line in lines:
        png = cv2.imread(str(masks / f"{line['name']}.png"), cv2.IMREAD_UNCHANGED)
        decoded = rle_decode(line["labels_rle"])
        assert decoded.shape == (48, 64) and np.array_equal(decoded, png)
        shares = np.bincount(png.ravel(), minlength=4) / png.size
        assert line["fractions"] == {f"c{c}": pytest.approx(shares[c], abs=1e-6) for c in np.flatnonzero(shares)}
    assert len({json.dumps(line["labels_rle"]) for line in lines}) > 1  # the frames differ, and so do the maps
    assert not result.realtime and result.dropped == 0


def test_stage_table_in_the_summary_and_json(tiny_model, tiny_video, tmp_path):
    out_json = tmp_path / "run.json"
    result = CliRunner().invoke(main, [str(tiny_model), str(tiny_video), "-o", str(tmp_path / "out.avi"),
                                       "--codec", "MJPG", "--json", str(out_json), "-q", "--batch", "2"])
    assert result.exit_code == 0, result.output
    stages = json.loads(out_json.read_text())["stages"]
    assert list(stages) == [s for s in STAGES if s not in ("wait for a frame", "wait for the model", "  in the server",
                                                           "  client + network")]
    assert stages["decode"]["count"] == 30 and stages["inference"]["count"] == 15
    assert stages["encode"]["count"] == 30 == stages["latency"]["count"]
    for s in stages.values():
        assert 0 <= s["p50_ms"] <= s["p95_ms"] and s["mean_ms"] >= 0
    assert "stage" in result.output and "inference" in result.output and "p95 ms" in result.output


def test_status_line_and_the_table_on_garbage():
    from runtime.stages import StageTimes, format_stages

    times = StageTimes()
    assert "latency -" in times.status(0, 0, 0)  # nothing measured yet is said, not invented
    for ms in (10, 20, 30, 40, 1000):
        times.add("latency", ms / 1000)
    times.add("inference", 0.005)
    line = times.status(9, 5, 4)
    assert "latency p50 30 p95 808 ms" in line and line.endswith("dropped 4")
    summary = times.summary()
    assert list(summary) == ["inference", "latency"] and summary["latency"]["p50_ms"] == 30
    assert format_stages(summary).splitlines()[2].split()[:3] == ["latency", "frame", "5"]


def test_a_failed_run_keeps_the_lines_written_and_no_empty_file(tiny_model, tiny_video, tmp_path):
    """The video and JSON of a failed run are removed as before; the JSON lines a consumer may already have read
    stay, each whole, and a run that failed before its first frame leaves no .jsonl at all."""
    from runtime.pipeline import segment_video
    from tests.runtime.test_pipeline import FailingRunner

    runner = create_runner("onnxruntime", tiny_model, threads=1)
    jsonl = tmp_path / "frames.jsonl"
    paths = OutputPaths(tmp_path / "out.avi", json=tmp_path / "run.json", jsonl=jsonl)
    options = SegmentOptions(batch=2, codec="MJPG", progress=False)
    with pytest.raises(RuntimeError, match="device lost"):
        segment(FailingRunner(runner, 1), tiny_video, paths, options)
    assert list(tmp_path.iterdir()) == []

    def disk_full(count):
        if count == 5:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        segment_video(runner, tiny_video, paths, options, on_frame=disk_full)
    assert list(tmp_path.iterdir()) == [jsonl]
    assert [line["index"] for line in read_lines(jsonl)] == [0, 1, 2, 3, 4]


def test_server_time_splits_the_round_trips():
    """A served model's statistics read before and after a run split inference into the server's own time and
    client + network; no split without readings, or when the server saw no request."""
    from runtime.stages import StageTimes

    times = StageTimes()
    for _ in range(5):
        times.add("inference", 0.1)
    times.split_server_time(None, (15, 1.3))
    times.split_server_time((10, 1.0), (10, 1.0))
    assert "  in the server" not in times.summary()
    times.split_server_time((10, 1.0), (15, 1.3))
    summary = times.summary()
    assert list(summary) == ["inference", "  in the server", "  client + network"]
    assert summary["  in the server"]["mean_ms"] == 60 and summary["  client + network"]["mean_ms"] == 40
    assert summary["  in the server"]["p95_ms"] is None
    assert format_table_row(summary, "  in the server") == ["in", "the", "server", "request", "5", "60.00", "-", "-"]


def format_table_row(summary, stage):
    from runtime.stages import format_stages

    return next(line for line in format_stages(summary).splitlines() if line.startswith(stage)).split()
