"""psp-bench e2e: psp-infer's pipeline on a video beside the pure model, with the per-stage table."""
from __future__ import annotations

import json

from click.testing import CliRunner

from benchmarks.cli import main
from runtime.stages import STAGES
from tests.runtime.conftest import make_onnx, write_video


def test_end_to_end_beside_the_pure_model(tmp_path):
    model = make_onnx(tmp_path / "tiny.onnx")
    video = write_video(tmp_path / "clip.avi", frames=40)
    out = tmp_path / "e2e.json"
    result = CliRunner().invoke(main, ["e2e", str(model), "--source", str(video), "--backend", "onnxruntime",
                                       "--threads", "1", "--seconds", "0.1", "--frames", "25", "--batch", "2",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(out.read_text())
    assert report["frames_in"] == 25 == report["frames_out"] and report["dropped"] == 0 and not report["realtime"]
    assert len(report["pure_fps"]) == 2 and all(v > 0 for v in report["pure_fps"])
    assert report["ratio"] == report["e2e_fps"] / (sum(report["pure_fps"]) / 2) and report["ratio"] > 0
    assert set(report["stages"]) <= set(STAGES) and report["stages"]["inference"]["count"] == 13
    assert "(video, 10 fps, 64x48)" in result.output and "of pure" in result.output and "p95 ms" in result.output


def test_end_to_end_refuses_what_it_cannot_read(tmp_path):
    model = make_onnx(tmp_path / "tiny.onnx")
    result = CliRunner().invoke(main, ["e2e", str(model), "--source", "/dev/video98"])
    assert result.exit_code == 2 and "camera not found: /dev/video98" in result.output
