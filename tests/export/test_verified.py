"""Verified FP16/INT8 conversion on the outlier network of issue #13 (experiments/outliers.py) and an FP16-hostile
network (tests/export/conftest.py): plain INT8 fails the gate, --fallback none refuses and writes nothing, the
default repairs it for both INT8 targets, FP16 passes untouched, FP16 repair by FP32 fallback; the mIoU gate;
the calibration-method switch and a rejected equalization; the greedy FP32 fallback when equalization is not
available; a written file below the gate removed; psp-export compare. Every written file is run again here
and compared with FP32 on the held-out images: the tests never take the conversion's word for it."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from export.evaluation import evaluate_miou, logits, open_runner
from export.precision.cli import fp16_command, int8_command
from export.precision.graph import calibration_batch
from export.precision.verdict import judge
from export.precision.verified import drawn_scenes, held_out
from pspcore.model_info import read_onnx_info
from tests.export.scenes import SIZE, scene_batch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("modelopt.onnx")
pytestmark = pytest.mark.slow  # each test runs a calibrated, verified conversion (and repair) of a real network


@pytest.fixture(scope="module")
def eval_list(outlier_onnx, scenes_dir, tmp_path_factory):
    """A labelled list of 4 scenes whose labels are the FP32 model's own (the evaluation's slide protocol): FP32
    scores 100% mIoU, so a candidate's drop is what it loses."""
    from pspnet.evaluate import EvalMode, predict_labels

    folder = tmp_path_factory.mktemp("labelled")
    lines = []
    with open_runner(outlier_onnx) as fp32:
        for image in sorted(scenes_dir.iterdir())[:4]:
            rgb = cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)
            labels = predict_labels(fp32.infer, rgb, EvalMode("slide", crop=SIZE), fp32.info.mean, fp32.info.std)
            cv2.imwrite(str(folder / image.name), labels.astype(np.uint8))
            lines.append(f"{image} {folder / image.name}\n")
    listing = folder / "eval.txt"
    listing.write_text("".join(lines))
    return listing


def _int8(args, tmp_path, outlier_onnx, scenes_dir, name="m.int8.onnx"):
    out = tmp_path / name
    result = CliRunner().invoke(int8_command, [str(outlier_onnx), "-o", str(out), "--calib-images", str(scenes_dir),
                                               *args])
    return result, out


def _rerun(fp32_path, written: Path, batch: np.ndarray, eval_list=None):
    """The verdict of the written file itself against its FP32 source on `batch` (and the labelled list)."""
    with open_runner(fp32_path) as fp32, open_runner(written) as other:
        miou = None
        if eval_list is not None:
            info = fp32.info
            miou = (evaluate_miou(fp32, eval_list, info, SIZE), evaluate_miou(other, eval_list, info, SIZE))
        return judge(logits(fp32, batch), logits(other, batch), miou)


def _held_out_batch(fp32_path, images_dir: Path) -> np.ndarray:
    """The INT8 conversion's verification images: every 4th calibration image, prepared the same way."""
    _, held = held_out(sorted(images_dir.iterdir()))
    return calibration_batch(held, read_onnx_info(fp32_path), SIZE).batch


def _one_error_line(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def test_plain_int8_fails_and_fallback_none_refuses_writing_nothing(outlier_onnx, scenes_dir, tmp_path):
    result, out = _int8(["--target", "onnxruntime", "--fallback", "none"], tmp_path, outlier_onnx, scenes_dir)
    assert result.exit_code == 1, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in result.output
    assert "INT8 model keeps" in error[0] and "below the gate 98%" in error[0] and "nothing written" in error[0]
    kept = float(error[0].split("keeps ")[1].split("%")[0])
    assert kept < 50, error[0]  # the outliers wreck plain INT8
    assert not out.exists() and not list(tmp_path.glob(".m.int8*"))


@pytest.mark.parametrize("target", ["onnxruntime", pytest.param("tensorrt", marks=pytest.mark.slow)])
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
    rerun = _rerun(outlier_onnx, out, _held_out_batch(outlier_onnx, scenes_dir))
    assert rerun.agreement >= 0.98 and rerun.agreement == pytest.approx(report["after"]["agreement"])


def test_fp16_passes_untouched_on_the_verify_images(outlier_onnx, scenes_dir, tmp_path):
    verify = tmp_path / "verify"
    verify.mkdir()
    for image in sorted(scenes_dir.iterdir())[:3]:
        (verify / image.name).write_bytes(image.read_bytes())
    out = tmp_path / "m.fp16.onnx"
    result = CliRunner().invoke(fp16_command, [str(outlier_onnx), "-o", str(out), "--json", str(tmp_path / "r.json"),
                                               "--verify-images", str(verify)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["attempts"]) == 1 and report["after"]["agreement"] >= 0.995 and report["kept_fp32"] == []
    assert report["verification"] == f"from {verify}" and report["verification_images"] == 3
    assert read_onnx_info(out).extra["precision_repair"]["verification_images"] == 3
    batch = calibration_batch(sorted(verify.iterdir()), read_onnx_info(outlier_onnx), SIZE).batch
    rerun = _rerun(outlier_onnx, out, batch)
    assert rerun.agreement >= 0.995 and rerun.agreement == pytest.approx(report["after"]["agreement"])
    missing = CliRunner().invoke(fp16_command, [str(outlier_onnx), "-o", str(tmp_path / "x.onnx"), "--verify-images",
                                                str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "verification image folder not found" in _one_error_line(missing)
    assert not (tmp_path / "x.onnx").exists()


def test_fp16_repair_keeps_the_hostile_node_fp32(fp16_hostile_onnx, tmp_path):
    """FP16 rounds the `difference` conv's weight 1 + 4e-4 to 1: plain FP16 loses the labels; repair keeps that
    node FP32 (AutoCast exclusion) and the written file keeps them."""
    out, report_path = tmp_path / "h.fp16.onnx", tmp_path / "r.json"
    result = CliRunner().invoke(fp16_command, [str(fp16_hostile_onnx), "-o", str(out), "--json", str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert not report["attempts"][0]["passed"] and report["before"]["agreement"] < 0.5
    assert report["kept_fp32"] == ["difference"] and report["attempts"][-1]["passed"]
    assert read_onnx_info(out).extra["precision_repair"]["kept_fp32"] == ["difference"]
    info = read_onnx_info(fp16_hostile_onnx)
    rerun = _rerun(fp16_hostile_onnx, out, drawn_scenes(info, SIZE))
    assert rerun.agreement >= 0.995 and rerun.agreement == pytest.approx(report["after"]["agreement"])


def test_written_file_below_the_gate_is_removed(fp16_hostile_onnx, tmp_path, monkeypatch):
    """The conversion runs the file it wrote: a writer that gets it wrong (here: the logits negated on the way
    to disk) makes the command fail in one line, with nothing left at the output path."""
    import onnx

    from export.precision.targets.fp16 import Fp16Target

    real_write = Fp16Target.write

    def negated(self, model, source_model, exclude, info, dst):
        broken = onnx.ModelProto()
        broken.CopyFrom(model)
        output = broken.graph.output[0].name
        for node in broken.graph.node:
            node.output[:] = [name if name != output else output + "_raw" for name in node.output]
        broken.graph.node.append(onnx.helper.make_node("Neg", [output + "_raw"], [output], name="negate"))
        return real_write(self, broken, source_model, exclude, info, dst)

    monkeypatch.setattr(Fp16Target, "write", negated)  # the written file only: the candidates pass
    out = tmp_path / "h.fp16.onnx"
    result = CliRunner().invoke(fp16_command, [str(fp16_hostile_onnx), "-o", str(out)])
    assert result.exit_code == 1, result.output
    error = _one_error_line(result)
    assert "the written FP16 model h.fp16.onnx keeps" in error and "it was removed" in error
    assert not out.exists() and not list(tmp_path.glob(".h.fp16*"))


def test_miou_gate_refuses_plain_int8(outlier_onnx, scenes_dir, eval_list, tmp_path):
    result, out = _int8(["--target", "onnxruntime", "--fallback", "none", "--min-agreement", "0", "--eval-list",
                         str(eval_list), "--max-miou-drop", "5"], tmp_path, outlier_onnx, scenes_dir)
    assert result.exit_code == 1, result.output
    error = _one_error_line(result)
    assert "at or above the gate 0%" in error and "(allowed 5)" in error and "nothing written" in error
    assert float(error.split("mIoU drop ")[1].split(" pts")[0]) > 5
    assert not out.exists()


def test_repair_honours_the_miou_gate(outlier_onnx, scenes_dir, eval_list, tmp_path):
    """With no agreement gate, only the mIoU drop decides: the plain model passes on agreement but not on mIoU,
    so repair must go on until the mIoU holds - and the written file holds it when run again."""
    report_path = tmp_path / "report.json"
    result, out = _int8(["--target", "onnxruntime", "--min-agreement", "0", "--eval-list", str(eval_list),
                         "--max-miou-drop", "5", "--json", str(report_path)], tmp_path, outlier_onnx, scenes_dir)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    first, last = report["attempts"][0], report["attempts"][-1]
    assert not first["passed"] and first["miou_drop"] > 5 and last["passed"] and last["miou_drop"] <= 5
    assert report["before"]["miou_reference"] == pytest.approx(1.0) and report["after"]["miou_drop"] <= 5
    rerun = _rerun(outlier_onnx, out, _held_out_batch(outlier_onnx, scenes_dir), eval_list)
    assert rerun.miou_drop <= 5 and rerun.miou_drop == pytest.approx(report["after"]["miou_drop"])


def test_method_switch_after_a_rejected_equalization(scene_onnx, scenes_dir, tmp_path, monkeypatch):
    """Repair's middle steps on a network INT8 handles: the chosen calibration (entropy, its activation ranges
    made to collapse here) fails, an equalization that changed the FP32 function is refused (_still_fp32), and the next
    method (max) passes; the written file records and keeps it."""
    import onnx

    import export.precision.repair as repair
    from export.precision.equalize import Equalization
    from export.precision.targets.int8_onnxruntime import OnnxRuntimeInt8

    quantize = OnnxRuntimeInt8.quantize

    def collapsing(self, src, work, batch, method, exclude):
        model = quantize(self, src, work, batch, method, exclude)
        if method == "entropy":  # every activation range cut to 1%: a calibration whose ranges collapsed
            scales = {n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear"}
            for init in model.graph.initializer:
                if init.name in scales:
                    init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * 0.01, init.name))
        return model

    def changed(src, dst):  # "equalized", but with the classifier's weights halved: not the same FP32 function
        model = onnx.load(str(src))
        weight = next(n.input[1] for n in model.graph.node if n.name == "/network/cls/cls.4/Conv")
        init = next(i for i in model.graph.initializer if i.name == weight)
        init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init) * 0.5, init.name))
        onnx.save(model, str(dst))
        return Equalization(Path(dst), 1, 1.0)

    monkeypatch.setattr(OnnxRuntimeInt8, "quantize", collapsing)
    monkeypatch.setattr(repair, "equalize", changed)
    report_path, out = tmp_path / "report.json", tmp_path / "m.int8.onnx"
    result = CliRunner().invoke(int8_command, [str(scene_onnx[0]), "-o", str(out), "--calib-images", str(scenes_dir),
                                               "--target", "onnxruntime", "--min-agreement", "90", "--json",
                                               str(report_path)])
    assert result.exit_code == 0, result.output
    assert "equalization changed the FP32 output" in result.output
    report = json.loads(report_path.read_text())
    assert [a["step"] for a in report["attempts"]] == ["plain", "method max"]
    assert not report["attempts"][0]["passed"] and report["method"] == "max" and not report["equalized"]
    info = read_onnx_info(out)
    assert info.extra["calibration"]["method"] == "max" and info.extra["precision_repair"]["method"] == "max"
    rerun = _rerun(scene_onnx[0], out, _held_out_batch(scene_onnx[0], scenes_dir))
    assert rerun.agreement >= 0.9 and rerun.agreement == pytest.approx(report["after"]["agreement"])


@pytest.mark.slow
def test_fallback_keeps_the_broken_layers_fp32_when_equalization_is_unavailable(outlier_onnx, scenes_dir, tmp_path,
                                                                             monkeypatch):
    """Without equalization the greedy fallback must find the head pair: the conv reading the outlier
    channels, and (ONNX Runtime puts the Q/DQ at the producer) the conv producing them."""
    import export.precision.repair as repair
    from export.precision.equalize import Equalization

    monkeypatch.setattr(repair, "equalize", lambda src, dst: Equalization(dst, 0, 0.0))
    report_path = tmp_path / "report.json"
    result, out = _int8(["--target", "onnxruntime", "--json", str(report_path)], tmp_path, outlier_onnx, scenes_dir)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert not report["equalized"] and report["after"]["agreement"] >= 0.98
    assert "/network/cls/cls.4/Conv" in report["kept_fp32"] and "/network/cls/cls.0/Conv" in report["kept_fp32"]
    assert 0 < report["fp32_flops_share"] < 0.5 and len(report["attempts"]) <= 6
    assert read_onnx_info(out).extra["precision_repair"]["kept_fp32"] == report["kept_fp32"]
    rerun = _rerun(outlier_onnx, out, _held_out_batch(outlier_onnx, scenes_dir))
    assert rerun.agreement >= 0.98 and rerun.agreement == pytest.approx(report["after"]["agreement"])


@pytest.mark.slow
def test_gate_failure_after_repair_names_the_best_reached(outlier_onnx, scenes_dir, tmp_path, monkeypatch):
    import export.precision.repair as repair

    monkeypatch.setattr(repair, "MAX_RUNS", 2)
    result, out = _int8(["--target", "onnxruntime", "--min-agreement", "100"], tmp_path, outlier_onnx, scenes_dir)
    assert result.exit_code == 1 and "below the gate 100%" in result.output and "FP16" in result.output
    assert "after 2 conversions" in result.output and not out.exists()


def test_compare_marks_the_first_broken_layer(outlier_onnx, scenes_dir, tmp_path):
    from export.precision.compare_cli import compare_command

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
    from export.precision.equalize import equalize

    result = equalize(outlier_onnx, tmp_path / "eq.onnx")
    assert result.pairs >= 8 and 2.5 < result.largest_log10_scale < 3.5
    batch = scene_batch(tiny_info, seed=80)
    with open_runner(outlier_onnx) as fp32, open_runner(result.path) as equalized:
        before, after = logits(fp32, batch), logits(equalized, batch)
    assert np.abs(before - after).max() <= 1e-4 * (before.max() - before.min())


def test_fp16_repair_uses_autocast_exclusions_and_gives_up_with_one_line(outlier_onnx, tmp_path, monkeypatch):
    """An unreachable gate: FP16's fallback keeps nodes FP32 through AutoCast, then refuses within its budget."""
    import export.precision.repair as repair

    monkeypatch.setattr(repair, "MAX_RUNS", 2)
    out = tmp_path / "m.fp16.onnx"
    result = CliRunner().invoke(fp16_command, [str(outlier_onnx), "-o", str(out), "--min-agreement", "100"])
    assert result.exit_code == 1, result.output
    assert "FP16 model keeps at most" in result.output and "FP32 fallback of 1 nodes" in result.output
    assert "fallback 1 node(s)" in result.output and not out.exists()


def test_latency_warning_when_int8_is_not_faster(outlier_onnx, scenes_dir, tmp_path, monkeypatch):
    import export.precision.verified as verified

    monkeypatch.setattr(verified, "latency_ms", lambda runner, image: 10.0)
    result, out = _int8(["--target", "onnxruntime", "--min-agreement", "0"], tmp_path, outlier_onnx, scenes_dir)
    assert result.exit_code == 0 and "warning: INT8 (10.0 ms) is not faster than FP32 (10.0 ms)" in result.output


def test_the_reported_latency_is_timed_long_enough(monkeypatch):
    """At least LATENCY_RUNS timed calls and LATENCY_SECONDS of them, after LATENCY_WARMUP_S of warm-up: on a
    clock that moves 1/8 s per call, 2 warm-up calls and 5 timed; at 1/64 s per call, 13 and 32."""
    import export.evaluation as evaluation

    for step, warm, timed in ((1 / 8, 2, 5), (1 / 64, 13, 32)):  # binary fractions: exact sums
        now, calls = [0.0], []
        monkeypatch.setattr(evaluation.time, "perf_counter", lambda: now[0])

        class Runner:
            def infer(self, batch):
                now[0] += step
                calls.append(now[0])

        assert evaluation.latency_ms(Runner(), np.zeros((1, 3, 8, 8), np.float32)) == pytest.approx(1000 * step)
        assert len(calls) == warm + timed, (step, len(calls))
