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
    from experiments.demo import bf16_reason

    bf16 = bf16_reason() is None  # OpenVINO runs bf16 on this CPU: the demo adds a bf16 model
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
    assert {r["precision"] for r in bench["results"]} == {"fp32", "fp16", "int8", *(("bf16",) if bf16 else ())}
    assert bench["baseline"] == "torch fp32"
    rows = json.loads((out / "accuracy.json").read_text())["rows"]
    models = 4 + bf16  # the baseline, FP32, FP16, INT8 (and bf16)
    assert len(rows) == models and rows[0]["reference"] and all(r["drop"] is not None for r in rows)
    summary = (out / "summary.txt").read_text()
    outcomes = dict(re.findall(r"^  (\S.*?)\s+[\d.]+ s  (.+)$", summary, re.M))
    assert len(outcomes) == 8, summary
    skippable = {"TensorRT engines": True, "OpenVINO bf16 (psp-export bf16)": not bf16}
    for stage, outcome in outcomes.items():  # every stage ran; only these may be skipped here, with a reason
        assert outcome == "done" or (skippable.get(stage) and outcome.startswith("skipped: ")), stage
    mious = [float(v) for v in re.findall(r"mIoU .+?\s([\d.]+)%", summary)]
    assert len(mious) == models and all(0 <= v <= 100 for v in mious)  # the key numbers are the reports' own
    assert len(re.findall(r"img/s, [\d.]+x eager FP32", summary)) == models
    agreements = re.findall(r"^  (\w+) agreement with the FP32 labels +([\d.]+)% ", summary, re.M)
    assert [p for p, _ in agreements] == ["FP16", "INT8", *(("BF16",) if bf16 else ())], summary
    assert all(0 <= float(v) <= 100 for _, v in agreements)
    fp16 = json.loads((out / "models" / "pspnet18-tiny-fp16.report.json").read_text())
    # verified on the demo's training-split scenes, not on 6 drawn ones
    assert fp16["verification"].endswith("train/images") and fp16["verification_images"] == 3


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


def test_the_bf16_step_converts_where_the_cpu_runs_bf16_and_says_why_not_elsewhere(tmp_path, monkeypatch):
    """Both branches on every CPU: forced on, psp-export bf16 writes the IR and its report (OpenVINO verifies it
    in f32 where the CPU has no bf16); forced off, the stage is skipped with the reason and writes nothing."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install '.[openvino]')")
    from experiments import demo
    from pspnet.data.context_scenes import export_split
    from tests.runtime.conftest import make_onnx

    paths = demo.Paths(tmp_path, "tiny")
    paths.model("fp32").parent.mkdir()
    make_onnx(paths.model("fp32"))
    export_split(paths.data, "train", n=3, size=33)  # what it verifies on
    monkeypatch.setattr(demo, "bf16_reason", lambda: "no bf16 here")
    assert demo.convert_bf16(paths) == "skipped: OpenVINO bf16 needs a CPU with bf16 (no bf16 here)"
    assert not paths.model("bf16", ".xml").exists()
    monkeypatch.setattr(demo, "bf16_reason", lambda: None)
    assert demo.convert_bf16(paths) == [paths.model("bf16", ".xml")]
    assert paths.model("bf16", ".xml").stat().st_size > 0 and paths.model("bf16", ".bin").stat().st_size > 0
    report = json.loads(paths.conversion_report("bf16").read_text())
    assert report["precision"] == "bf16" and report["verification_images"] == 3
