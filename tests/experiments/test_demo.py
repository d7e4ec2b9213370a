"""The end-to-end demo in its --quick form: every psp-* command in sequence, as a user runs them."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import worker_threads


@pytest.mark.slow
def test_quick_demo_writes_every_output(tmp_path):
    out = tmp_path / "demo"
    command = [sys.executable, "-m", "experiments.demo", str(out), "--quick", "--threads", str(worker_threads())]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("train/model.pth", "models/pspnet18-tiny-fp32.onnx", "models/pspnet18-tiny-fp16.onnx",
                 "models/pspnet18-tiny-int8.onnx", "video/context-scenes-seg.mp4", "bench.json", "bench.md",
                 "bench.png", "accuracy.json", "accuracy.md", "summary.txt"):
        assert (out / name).stat().st_size > 0, name
    frames = sorted((out / "frames").glob("overlay_*.png"))
    assert len(frames) == 2
    bench = json.loads((out / "bench.json").read_text())
    assert {r["precision"] for r in bench["results"]} == {"fp32", "fp16", "int8"}
    assert bench["baseline"] == "torch fp32"
    rows = json.loads((out / "accuracy.json").read_text())["rows"]
    assert len(rows) == 4 and rows[0]["reference"] and all(r["drop"] is not None for r in rows)
    summary = (out / "summary.txt").read_text()
    outcomes = dict(re.findall(r"^  (\S.*?)\s+[\d.]+ s  (.+)$", summary, re.M))
    assert len(outcomes) == 7, summary
    for stage, outcome in outcomes.items():  # every stage ran; only TensorRT may be skipped, with a reason
        assert outcome == "done" or (stage == "TensorRT engines" and outcome.startswith("skipped: ")), stage
    mious = [float(v) for v in re.findall(r"mIoU .+?\s([\d.]+)%", summary)]
    assert len(mious) == 4 and all(0 <= v <= 100 for v in mious)  # the key numbers are the reports' own
    assert len(re.findall(r"img/s, [\d.]+x eager FP32", summary)) == 4  # the baseline and three models


def test_demo_refuses_a_file_as_output(tmp_path):
    from click.testing import CliRunner

    from experiments.demo import main

    target = tmp_path / "file"
    target.write_text("x")
    result = CliRunner().invoke(main, [str(target)])
    assert result.exit_code == 2 and "is a file" in result.output


def test_a_demo_folder_names_its_model_whatever_network_it_trained(tmp_path):
    """Other experiments (ort_int8_analysis --trained) read the demo's models through Paths.found_model."""
    from experiments.demo import Paths
    from pspcore.errors import InputError

    with pytest.raises(InputError, match="no demo model"):
        Paths.found_model(tmp_path, "fp32")
    (tmp_path / "models").mkdir()
    for name in ("pspnet18-tiny-fp32.onnx", "pspnet18-tiny-int8.onnx"):
        (tmp_path / "models" / name).write_bytes(b"x")
    assert Paths.found_model(tmp_path, "fp32") == tmp_path / "models" / "pspnet18-tiny-fp32.onnx"
