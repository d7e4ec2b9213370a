"""Verified FP16/INT8 conversion on the outlier network of issue #13 (tests/export/outlier.py): plain INT8 fails
the gate, --fallback none refuses and writes nothing, the default repairs it for both INT8 targets, FP16 passes
untouched; the greedy FP32 fallback when equalization is not available; psp-export compare."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from export.parity import write_scenes
from export.precision_cli import fp16_command, int8_command
from pspcore.model_info import read_onnx_info
from experiments.outliers import with_outliers
from tests.export.scenes import SIZE, scene_batch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("modelopt.onnx")
pytestmark = pytest.mark.slow  # each test runs a calibrated, verified conversion (and repair) of a real network


@pytest.fixture(scope="module")
def outlier_onnx(scene_classifier, tiny_info, tmp_path_factory):
    """The tiny PSPNet with a separating classifier and 1000x outlier channels, exported (FP32 unchanged)."""
    from export.onnx import export_onnx

    model = scene_classifier
    outlier = with_outliers(model, scene_batch(tiny_info, seed=60))
    batch = torch.from_numpy(scene_batch(tiny_info, seed=70))
    with torch.no_grad():
        assert (model(batch) - outlier(batch)).abs().max() < 1e-4  # function-preserving
    path = tmp_path_factory.mktemp("outlier") / "outlier.onnx"
    export_onnx(outlier, tiny_info, path, size=SIZE)
    return path


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    write_scenes(folder, [(60 + 4 * i, 80) for i in range(12)])
    return folder


def _int8(args, tmp_path, outlier_onnx, scenes_dir, name="m.int8.onnx"):
    out = tmp_path / name
    result = CliRunner().invoke(int8_command, [str(outlier_onnx), "-o", str(out), "--calib-images", str(scenes_dir),
                                               *args])
    return result, out


def test_plain_int8_fails_and_fallback_none_refuses_writing_nothing(outlier_onnx, scenes_dir, tmp_path):
    result, out = _int8(["--target", "onnxruntime", "--fallback", "none"], tmp_path, outlier_onnx, scenes_dir)
    assert result.exit_code == 1, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in result.output
    assert "INT8 model keeps" in error[0] and "below the gate 98%" in error[0] and "nothing written" in error[0]
    kept = float(error[0].split("keeps ")[1].split("%")[0])
    assert kept < 50, error[0]  # the outliers wreck plain INT8
    assert not out.exists() and not list(tmp_path.glob(".m.int8*"))


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_default_repairs_the_outlier_network_to_the_gate(target, outlier_onnx, scenes_dir, tmp_path):
    report_path = tmp_path / "report.json"
    result, out = _int8(["--target", target, "--json", str(report_path)], tmp_path, outlier_onnx, scenes_dir)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    first, last = report["attempts"][0], report["attempts"][-1]
    assert not first["passed"] and first["agreement"] < 0.5
    assert last["passed"] and report["after"]["agreement"] >= 0.98
    assert report["equalized"] and report["kept_fp32"] == [] and len(report["attempts"]) == 2  # one repair run
    assert report["sensitivity"] and report["verification_images"] == 3 and report["calibration_images"] == 9
    info = read_onnx_info(out)
    assert info.precision == "int8" and info.extra["int8_target"] == target
    repair = info.extra["precision_repair"]
    assert repair["equalized"] and repair["kept_fp32"] == [] and repair["agreement"] >= 0.98
    assert "FAIL" in result.output and "cross-layer equalization applied" in result.output
    if target == "onnxruntime":
        assert set(report["latency_ms"]) == {"fp32", "int8 plain", "int8 repaired"}


def test_fp16_passes_untouched(outlier_onnx, tmp_path):
    out = tmp_path / "m.fp16.onnx"
    result = CliRunner().invoke(fp16_command, [str(outlier_onnx), "-o", str(out), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["attempts"]) == 1 and report["after"]["agreement"] >= 0.995 and report["kept_fp32"] == []
    assert read_onnx_info(out).extra["precision_repair"]["kept_fp32"] == []


def test_fallback_keeps_the_broken_layers_fp32_when_equalization_is_unavailable(outlier_onnx, scenes_dir, tmp_path,
                                                                             monkeypatch):
    """Without equalization the greedy fallback must find the head pair: the conv reading the outlier
    channels, and (ONNX Runtime puts the Q/DQ at the producer) the conv producing them."""
    import export.repair as repair
    from export.equalize import Equalization

    monkeypatch.setattr(repair, "equalize", lambda src, dst: Equalization(dst, 0, 0.0))
    report_path = tmp_path / "report.json"
    result, out = _int8(["--target", "onnxruntime", "--json", str(report_path)], tmp_path, outlier_onnx, scenes_dir)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert not report["equalized"] and report["after"]["agreement"] >= 0.98
    assert "/network/cls/cls.4/Conv" in report["kept_fp32"] and "/network/cls/cls.0/Conv" in report["kept_fp32"]
    assert 0 < report["fp32_flops_share"] < 0.5 and len(report["attempts"]) <= 6
    assert read_onnx_info(out).extra["precision_repair"]["kept_fp32"] == report["kept_fp32"]


def test_gate_failure_after_repair_names_the_best_reached(outlier_onnx, scenes_dir, tmp_path, monkeypatch):
    import export.repair as repair

    monkeypatch.setattr(repair, "MAX_RUNS", 2)
    result, out = _int8(["--target", "onnxruntime", "--min-agreement", "100"], tmp_path, outlier_onnx, scenes_dir)
    assert result.exit_code == 1 and "below the gate 100%" in result.output and "FP16" in result.output
    assert "after 2 conversions" in result.output and not out.exists()


def test_compare_marks_the_first_broken_layer(outlier_onnx, scenes_dir, tmp_path):
    from export.compare_cli import compare_command

    plain, _ = _int8(["--target", "tensorrt", "--fallback", "none", "--min-agreement", "0"], tmp_path, outlier_onnx,
                     scenes_dir)
    assert plain.exit_code == 0, plain.output
    result = CliRunner().invoke(compare_command, [str(outlier_onnx), str(tmp_path / "m.int8.onnx"), "--images",
                                                  str(scenes_dir), "--num-images", "2", "--json",
                                                  str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "c.json").read_text())
    # the outlier channels enter layer0.3 first: its input loses the ordinary channels to one per-tensor scale
    assert data["first_past"] == "/network/layer0/layer0.3/Conv", result.output
    assert "<- first past threshold" in result.output and data["agreement"] < 0.5
    names = [row["node"] for row in data["layers"]]
    assert names.index("/network/layer0/layer0.0/Conv") < names.index("/network/cls/cls.4/Conv")


def test_equalization_keeps_fp32_and_undoes_the_outliers(outlier_onnx, tmp_path, tiny_info):
    from export.equalize import equalize
    from export.verdict import run_logits, session

    result = equalize(outlier_onnx, tmp_path / "eq.onnx")
    assert result.pairs >= 8 and 2.5 < result.largest_log10_scale < 3.5
    batch = scene_batch(tiny_info, seed=80)
    before, after = run_logits(session(outlier_onnx), batch), run_logits(session(result.path), batch)
    assert np.abs(before - after).max() <= 1e-4 * (before.max() - before.min())


def test_fp16_repair_uses_autocast_exclusions_and_gives_up_with_one_line(outlier_onnx, tmp_path, monkeypatch):
    """An unreachable gate: FP16's fallback keeps nodes FP32 through AutoCast, then refuses within its budget."""
    import export.repair as repair

    monkeypatch.setattr(repair, "MAX_RUNS", 2)
    out = tmp_path / "m.fp16.onnx"
    result = CliRunner().invoke(fp16_command, [str(outlier_onnx), "-o", str(out), "--min-agreement", "100"])
    assert result.exit_code == 1, result.output
    assert "FP16 model keeps at most" in result.output and "FP32 fallback of 1 nodes" in result.output
    assert "fallback 1 node(s)" in result.output and not out.exists()


def test_latency_warning_when_int8_is_not_faster(outlier_onnx, scenes_dir, tmp_path, monkeypatch):
    import export.verified as verified

    monkeypatch.setattr(verified, "_latency_ms", lambda model, image: 10.0)
    result, out = _int8(["--target", "onnxruntime", "--min-agreement", "0"], tmp_path, outlier_onnx, scenes_dir)
    assert result.exit_code == 0 and "warning: INT8 (10.0 ms) is not faster than FP32 (10.0 ms)" in result.output
