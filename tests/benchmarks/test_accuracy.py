"""psp-bench accuracy on a hand-made two-image dataset and fake runners with known predictions."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.accuracy import AccuracyConfig, format_accuracy, format_accuracy_markdown, run_accuracy
from benchmarks.cli import main
from benchmarks.records import Candidate
from tests.benchmarks.fakes import write_model


@pytest.fixture
def data_list(tmp_path):
    """Two 33x33 images labelled class 0 on top and class 1 below."""
    lines = []
    for i in range(2):
        image = np.full((33, 33, 3), 100 + 50 * i, np.uint8)
        label = np.zeros((33, 33), np.uint8)
        label[17:] = 1
        cv2.imwrite(str(tmp_path / f"img{i}.png"), image)
        cv2.imwrite(str(tmp_path / f"lbl{i}.png"), label)
        lines.append(f"img{i}.png lbl{i}.png\n")
    (tmp_path / "val.txt").write_text("".join(lines))
    return str(tmp_path / "val.txt")


def test_drop_against_the_reference(tmp_path, fake_backend, data_list):
    ref = write_model(tmp_path / "ref.fake", cost_ms=1.0, label=0, size=[33, 33])
    same = write_model(tmp_path / "same.fake", cost_ms=1.0, label=0, precision="fp16", size=[33, 33])
    worse = write_model(tmp_path / "worse.fake", cost_ms=1.0, label=2, precision="int8", size=[33, 33])
    cands = [Candidate(same, "fake"), Candidate(worse, "fake"), Candidate(ref, "fake", baseline=True),
             Candidate(str(tmp_path / "gone.fake"), "fake")]
    report = run_accuracy(cands, AccuracyConfig(data_list=data_list))
    rows = {r.label: r for r in report.rows}
    assert list(rows) == ["fake fp32", "fake fp16", "fake int8"]  # the reference first
    assert rows["fake fp32"].reference and rows["fake fp32"].miou > 0 and rows["fake fp32"].images == 2
    assert rows["fake fp16"].drop == pytest.approx(0.0)
    assert rows["fake int8"].miou == 0.0
    assert rows["fake int8"].drop == pytest.approx(rows["fake fp32"].miou * 100)
    assert rows["fake fp32"].agreement == 1.0 and rows["fake fp16"].agreement == 1.0
    assert rows["fake int8"].agreement == 0.0  # another class everywhere: the agreement column shows it
    assert "gone.fake" in report.unavailable[0].line()
    assert "fake int8" in format_accuracy(report)
    table = [ln for ln in format_accuracy_markdown(report).splitlines() if ln.startswith("|")]
    assert len(table) == 2 + 3 and table[1].startswith("| --- | --- | ---:")


def test_cli_joins_speed_from_a_bench_report(tmp_path, fake_backend, data_list):
    ref = write_model(tmp_path / "ref.fake", cost_ms=4.0, label=0, size=[33, 33])
    fast = write_model(tmp_path / "fast.fake", cost_ms=1.0, label=0, precision="int8", size=[33, 33])
    bench = {"results": [{"model": ref, "backend": "fake", "batch": 1, "latency": {"median": 4.0}, "speedup": 1.0},
                         {"model": fast, "backend": "fake", "batch": 1, "latency": {"median": 1.0}, "speedup": 4.0}]}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    out = tmp_path / "acc.json"
    result = CliRunner().invoke(main, ["accuracy", "--data", data_list, fast, "--backend", "fake", "--baseline",
                                       ref, "--bench", str(tmp_path / "bench.json"), "--json", str(out)])
    # --baseline runs on torch, which cannot read a fake model: listed, and the rest still evaluated
    assert result.exit_code == 0 and "unavailable: ref.fake on torch" in result.output
    result = CliRunner().invoke(main, ["accuracy", "--data", data_list, ref, fast, "--backend", "fake",
                                       "--bench", str(tmp_path / "bench.json"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert [r["speedup"] for r in rows] == [1.0, 4.0]
    assert "4.00x" in result.output


def test_cli_bad_inputs(tmp_path):
    result = CliRunner().invoke(main, ["accuracy", "--data", str(tmp_path / "none.txt"), "m.onnx"])
    assert result.exit_code == 2 and result.output.startswith("error: list file not found")
    assert CliRunner().invoke(main, ["accuracy", "m.onnx"]).exit_code == 2  # --data or --dataset is required


def test_a_named_dataset_instead_of_a_list(tmp_path):
    from benchmarks.accuracy import open_images
    from pspcore.errors import InputError
    from tests.pspnet.dataset_trees import make_cityscapes

    root, _ = make_cityscapes(tmp_path)
    config = AccuracyConfig(dataset="cityscapes", root=str(root))
    assert len(open_images(config)) == 1  # val: one frame
    assert config.images == f"cityscapes val ({root})"
    with pytest.raises(InputError, match="exactly one of --data LIST or --dataset NAME"):
        AccuracyConfig(data_list="val.txt", dataset="voc")
    result = CliRunner().invoke(main, ["accuracy", "--dataset", "voc", "--data-root", str(root), "m.onnx"])
    assert result.exit_code == 2 and "not a Pascal VOC2012 folder" in result.output
