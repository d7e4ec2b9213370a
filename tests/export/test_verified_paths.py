"""The verified conversion's failure paths and its gate, on a probe network whose agreement is known exactly by
construction: a 1x1 conv with logit 0 = the red value of the pixel (mean 0, std 1: 0..255 as drawn) and logit 1
= a bias b, so a pixel is class 0 where red > b. A "conversion" that moves the bias to b' flips exactly the
pixels with red between b and b', and the verification images are drawn with a known count of each red value:
every expected agreement, lower bound and mIoU here is counted from the drawing, never by the code under test.

Covered: every step after the file is written fails -> nothing at the output path, one error line; every part of
the gate (agreement, mIoU drop, lower bound) re-applied to the written file; at the gate passes, one pixel
below fails (pipeline level, through psp-export); the per-image figures, the lower bound and the uncertain
notice in the report and --json; the model repair continues from after a step that helped but did not pass."""
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow  # psp-export end to end (on a one-conv network: well under a second each)

from export.precision.cli import fp16_command, int8_command  # noqa: E402
from export.precision.verdict import MIN_SURE_IMAGES  # noqa: E402
from pspcore.model_info import read_onnx_info  # noqa: E402

SIDE = 16  # the probe's input size: 256 pixels an image
PIXELS = SIDE * SIDE
SOURCE_BIAS = 150.0  # FP32: red > 150 is class 0
BACKGROUND, FRAGILE, WEAK, DARK = 255, 200, 170, 100  # red values: class 0, 0, 0, 1 in FP32
CONV = "probe"  # the probe's one node


def _probe_model(bias: float):
    from onnx import TensorProto, helper, numpy_helper

    weight = np.array([[[[1.0]], [[0.0]], [[0.0]]], [[[0.0]], [[0.0]], [[0.0]]]], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["logits"], name=CONV)], "probe",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIDE, SIDE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2, SIDE, SIDE])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array([0, bias], np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def probe(tmp_path_factory, tiny_info):
    from export.precision.graph import save_with_info

    info = tiny_info.with_(arch="probe", input_size=(SIDE, SIDE), num_classes=2, mean=(0.0, 0.0, 0.0),
                           std=(1.0, 1.0, 1.0), class_names=(), palette=())
    return save_with_info(_probe_model(SOURCE_BIAS), info, tmp_path_factory.mktemp("probe") / "probe.onnx")


def _draw(folder: Path, counts: list[dict[int, int]]) -> Path:
    """One image per entry: so many pixels of each red value (the rest BACKGROUND), written losslessly."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, count in enumerate(counts):
        red = np.full(PIXELS, BACKGROUND, np.uint8)
        start = 0
        for value, n in count.items():
            red[start:start + n] = value
            start += n
        image = np.zeros((SIDE, SIDE, 3), np.uint8)
        image[..., 2] = red.reshape(SIDE, SIDE)  # BGR on disk: channel 2 is red
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), image)
    return folder


def _with_bias(bias: float):
    model = _probe_model(SOURCE_BIAS)
    init = next(i for i in model.graph.initializer if i.name == "b")
    init.CopyFrom(onnx.numpy_helper.from_array(np.array([0, bias], np.float32), "b"))
    return model


@pytest.fixture
def fp16_bias(monkeypatch):
    """psp-export fp16 whose "conversion" moves the bias to `biases["convert"]` (to SOURCE_BIAS when repair keeps
    the node FP32): a candidate whose agreement the drawing fixes. Returns the dict to set."""
    from export.precision.targets.fp16 import Fp16Target

    biases = {"convert": SOURCE_BIAS}

    def convert(self, source, source_model, exclude, calib, method):
        return _with_bias(SOURCE_BIAS if CONV in exclude else biases["convert"])

    monkeypatch.setattr(Fp16Target, "convert", convert)
    return biases


def _run(command, args):
    result = CliRunner().invoke(command, [str(a) for a in args])
    return result


def _one_error_line(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def _t95(df: int) -> float:
    stats = pytest.importorskip("scipy.stats")
    return float(stats.t.ppf(0.95, df))


# ---- at the gate, and how sure the gate is -------------------------------------------------------------------

def test_at_the_gate_passes_and_one_pixel_below_fails(probe, fp16_bias, tmp_path):
    """31/32 of the labels kept exactly (0, 8, 8, 16 pixels flipped of 4 x 256): --min-agreement 96.875 passes
    (">= gate"); one more flipped pixel fails, nothing written. The written file's figures are the drawing's."""
    fp16_bias["convert"] = 210.0  # flips the FRAGILE pixels only
    at_gate = _draw(tmp_path / "at", [{}, {FRAGILE: 8}, {FRAGILE: 8, DARK: 20}, {FRAGILE: 16}])
    out, report = tmp_path / "out" / "p.fp16.onnx", tmp_path / "r.json"
    out.parent.mkdir()
    args = [fp16_command, [probe, "-o", out, "--verify-images", at_gate, "--min-agreement", "96.875",
                           "--fallback", "none", "--json", report]]
    result = _run(*args)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    per_image = [1.0, 1 - 8 / PIXELS, 1 - 8 / PIXELS, 1 - 16 / PIXELS]
    assert data["after"]["agreement"] == 31 / 32 and sorted(data["after"]["per_image"]) == sorted(per_image)
    assert data["after"]["worst"] == 1 - 16 / PIXELS and len(data["attempts"]) == 1
    assert data["repair_continued_from"] is None and "repair continued from" not in result.output
    below = _draw(tmp_path / "below", [{}, {FRAGILE: 8}, {FRAGILE: 8, DARK: 20}, {FRAGILE: 17}])
    out.unlink()
    args[1][4] = below
    result = _run(*args)
    assert result.exit_code == 1, result.output
    error = _one_error_line(result)
    assert f"keeps {100 * (1 - 33 / 1024):.2f}% of the FP32 labels on 4 held-out images, below the gate 96.875%" \
        in error
    assert not list(out.parent.iterdir())


def test_per_image_figures_and_the_lower_bound_gate(probe, fp16_bias, tmp_path):
    """Garbage the pooled figure lets through: 12 images, 11 kept whole and one wrecked (every pixel flipped)
    keep 11/12 = 91.7% pooled, over a 90% gate; the lower bound over the images (one-sided t, counted here with
    scipy's t quantile) is far below it, so --gate-on lower-bound refuses the same model."""
    fp16_bias["convert"] = 210.0
    images = _draw(tmp_path / "v", [{}] * 11 + [{FRAGILE: PIXELS}])
    out, report = tmp_path / "out" / "p.fp16.onnx", tmp_path / "r.json"
    out.parent.mkdir()
    base = [probe, "-o", out, "--verify-images", images, "--min-agreement", "90", "--fallback", "none"]
    result = _run(fp16_command, [*base, "--json", report])
    assert result.exit_code == 0, result.output
    after = json.loads(report.read_text())["after"]
    per_image = [1.0] * 11 + [0.0]
    mean, sd = float(np.mean(per_image)), float(np.std(per_image, ddof=1))
    bound = mean - _t95(11) * sd / math.sqrt(12)
    assert after["agreement"] == pytest.approx(11 / 12) and sorted(after["per_image"]) == sorted(per_image)
    assert after["worst"] == 0.0 and after["spread"] == pytest.approx(sd)
    assert after["lower_bound"] == pytest.approx(bound, abs=1e-4) and bound < 0.8
    assert after["uncertain"] is False and 12 >= MIN_SURE_IMAGES and "uncertain" not in result.output
    assert f"95% lower bound {100 * bound:.2f}% over 12 images" in result.output
    assert f"95% lower bound {100 * bound:.2f}%)" in result.output  # the closing line too
    out.unlink()
    refused = _run(fp16_command, [*base, "--gate-on", "lower-bound"])
    assert refused.exit_code == 1, refused.output
    error = _one_error_line(refused)
    assert f"(its 95% lower bound over the images {100 * bound:.2f}%), below the gate 90%" in error
    assert f"plain                    agreement  91.67% (lower bound {100 * bound:.2f}%)" in refused.output
    assert not list(out.parent.iterdir())
    # the same model on 12 images that all keep 11/12 passes the lower-bound gate: no spread, bound = pooled
    even = _draw(tmp_path / "even", [{FRAGILE: PIXELS // 12}] * 12)
    base[4] = even
    steady = _run(fp16_command, [*base, "--gate-on", "lower-bound", "--json", report])
    assert steady.exit_code == 0, steady.output
    data = json.loads(report.read_text())
    after, kept = data["after"], 1 - (PIXELS // 12) / PIXELS
    assert data["attempts"][0]["lower_bound"] == pytest.approx(kept) and "lower bnd" in steady.output
    assert after["lower_bound"] == pytest.approx(kept) and after["agreement"] == pytest.approx(kept)


def test_too_few_images_are_reported_uncertain(probe, fp16_bias, tmp_path):
    fp16_bias["convert"] = 210.0
    images = _draw(tmp_path / "v", [{}, {FRAGILE: 4}, {FRAGILE: 2}])
    out, report = tmp_path / "p.fp16.onnx", tmp_path / "r.json"
    result = _run(fp16_command, [probe, "-o", out, "--verify-images", images, "--json", report,
                                 "--min-agreement", "99"])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["after"]["uncertain"] is True and data["after"]["images"] == 3 < MIN_SURE_IMAGES
    assert any("the figure is uncertain" in w for w in data["warnings"])
    assert result.output.count("the figure is uncertain") == 1 and "(uncertain: too few images)" in result.output
    assert read_onnx_info(out).extra["precision_repair"]["gate_on"] == "pooled"


# ---- failures after the file is written ----------------------------------------------------------------------

def _after_write_points():
    """Every step of the verified conversion after `write` (from STEPS itself: a step added later is covered),
    and the machinery re-checking the written file inside them."""
    from export.precision import verified

    steps = verified.STEPS[verified.STEPS.index(verified.write) + 1:]
    return ([f"step:{step.__name__}" for step in steps]
            + [f"call:{name}" for name in ("open_runner", "logits", "judge", "evaluate_miou", "_report",
                                           "write_report_json")] + ["target:read_back"])


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    """2 labelled images whose labels are the FP32 probe's (red > SOURCE_BIAS is class 0)."""
    folder = _draw(tmp_path_factory.mktemp("eval"), [{FRAGILE: 128}, {FRAGILE: 64, DARK: 64}])
    lines = []
    for image in sorted(folder.glob("img_*.png")):
        red = cv2.imread(str(image))[..., 2]
        label = folder / image.name.replace("img_", "label_")
        cv2.imwrite(str(label), (red <= SOURCE_BIAS).astype(np.uint8))
        lines.append(f"{image} {label}\n")
    (folder / "eval.txt").write_text("".join(lines))
    return folder / "eval.txt"


@pytest.mark.parametrize("point", _after_write_points())
def test_a_failure_after_writing_leaves_nothing(point, probe, fp16_bias, eval_set, tmp_path, monkeypatch):
    """A failure injected at each point once the file exists: exit 1, one error line naming it, and nothing at
    the output path or beside it (no temporary files), nor a report."""
    from export.precision import verified
    from export.precision.targets.fp16 import Fp16Target

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "p.fp16.onnx"
    fp16_bias["convert"] = 210.0
    images = _draw(tmp_path / "v", [{}, {FRAGILE: 1}, {}])
    kind, name = point.split(":")

    def injected(*args, **kwargs):
        raise RuntimeError(f"injected failure in {name}")

    if kind == "step":
        monkeypatch.setattr(verified, "STEPS", tuple(injected if s.__name__ == name else s for s in verified.STEPS))
    else:
        owner = Fp16Target if kind == "target" else verified
        real = getattr(owner, name)

        def once_written(*args, **kwargs):  # the same call before the file is written runs as it is
            return injected() if out.exists() else real(*args, **kwargs)

        monkeypatch.setattr(owner, name, once_written)
    result = _run(fp16_command, [probe, "-o", out, "--verify-images", images, "--eval-list", eval_set,
                                 "--max-miou-drop", "60", "--min-agreement", "99", "--json", out_dir / "r.json"])
    assert result.exit_code == 1, result.output
    assert f"injected failure in {name}" in _one_error_line(result)
    assert not list(out_dir.iterdir())


def test_every_part_of_the_gate_is_applied_to_the_written_file(probe, eval_set, tmp_path, monkeypatch):
    """The candidates are exact copies (100% agreement, no mIoU drop); the writer gets it wrong by moving the
    bias to 210, which changes no label on the verification images (no FRAGILE pixel there: the agreement stays
    100%, over the gate) but every FRAGILE pixel of the labelled images: only the mIoU part refuses it."""
    from export.precision.graph import save_with_info
    from export.precision.targets.fp16 import Fp16Target

    monkeypatch.setattr(Fp16Target, "convert", lambda self, *args: _with_bias(SOURCE_BIAS))
    monkeypatch.setattr(Fp16Target, "write", lambda self, model, source, exclude, info, dst:
                        save_with_info(_with_bias(210.0), info, dst))
    images = _draw(tmp_path / "v", [{}, {DARK: 30}, {}])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = _run(fp16_command, [probe, "-o", out_dir / "p.fp16.onnx", "--verify-images", images, "--eval-list",
                                 eval_set, "--max-miou-drop", "5"])
    assert result.exit_code == 1, result.output
    error = _one_error_line(result)
    # counted from eval_set's drawing: image 1 = 128 FRAGILE + 128 BACKGROUND, image 2 = 64 FRAGILE + 64 DARK +
    # 128 BACKGROUND; FP32 calls DARK class 1, the written file calls DARK and FRAGILE class 1
    class0_true = 256 + 192  # every pixel class 0 in FP32 except DARK
    class0_kept = 128 + 128  # BACKGROUND stays class 0
    class1_true, class1_pred = 64, 64 + 128 + 64  # DARK; DARK + every FRAGILE
    iou0 = class0_kept / class0_true  # predicted class 0 is a subset of the true class 0
    iou1 = class1_true / class1_pred  # true class 1 is a subset of predicted class 1
    drop = 100 * (1 - (iou0 + iou1) / 2)
    assert "the written FP16 model p.fp16.onnx keeps 100.00% of the FP32 labels" in error, error
    assert "at or above the gate 99.5%" in error and f"mIoU drop {drop:.2f} pts (allowed 5)" in error
    assert "it was removed" in error and not list(out_dir.iterdir())


def test_the_lower_bound_gate_is_applied_to_the_written_file(probe, tmp_path, monkeypatch):
    """Candidates exact, the writer wrecks one image of 12 (the red-only image's pixels lie between the biases):
    pooled 11/12 passes the 90% gate, its lower bound does not, on the written file."""
    from export.precision.graph import save_with_info
    from export.precision.targets.fp16 import Fp16Target

    monkeypatch.setattr(Fp16Target, "convert", lambda self, *args: _with_bias(SOURCE_BIAS))
    monkeypatch.setattr(Fp16Target, "write", lambda self, model, source, exclude, info, dst:
                        save_with_info(_with_bias(210.0), info, dst))
    images = _draw(tmp_path / "v", [{}] * 11 + [{FRAGILE: PIXELS}])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = [probe, "-o", out_dir / "p.fp16.onnx", "--verify-images", images, "--min-agreement", "90"]
    assert _run(fp16_command, args).exit_code == 0
    (out_dir / "p.fp16.onnx").unlink()
    result = _run(fp16_command, [*args, "--gate-on", "lower-bound"])
    assert result.exit_code == 1, result.output
    error = _one_error_line(result)
    assert error.startswith("error: the written FP16 model p.fp16.onnx keeps 91.67%") and "lower bound" in error
    assert "it was removed" in error and not list(out_dir.iterdir())


# ---- where repair continues from ------------------------------------------------------------------------------

def test_repair_continues_from_the_step_that_helped(probe, tmp_path, monkeypatch):
    """INT8 (onnxruntime target) with a quantizer whose bias depends on what it is given: plain 210 (flips
    FRAGILE and WEAK pixels), equalized 185 (WEAK only: it helped, not enough), the other methods on the
    equalized model 205 (worse: not built on), then FP32 fallback, which must continue from the equalized model
    with its method (entropy) and passes. The report names that starting point, and the quantizer saw it."""
    import export.precision.repair as repair
    from export.precision.equalize import Equalization
    from export.precision.targets.int8_onnxruntime import OnnxRuntimeInt8

    calls = []

    def quantize(self, src, work, batch, method, exclude=()):
        equalized = Path(src).name == "equalized.onnx"
        calls.append((equalized, method, tuple(exclude)))
        if CONV in exclude:
            return _with_bias(SOURCE_BIAS)
        return _with_bias({(False, "entropy"): 210.0, (True, "entropy"): 185.0}.get((equalized, method), 205.0))

    def equalize(src, dst):
        onnx.save(onnx.load(str(src)), str(dst))  # the same FP32 function: _still_fp32 accepts it
        return Equalization(Path(dst), 1, 0.0)

    monkeypatch.setattr(OnnxRuntimeInt8, "quantize", quantize)
    monkeypatch.setattr(repair, "equalize", equalize)
    # per image: 4 FRAGILE + 8 WEAK of 256; plain loses 12, equalized 8, max 12 -> all below the 99% gate
    images = _draw(tmp_path / "v", [{FRAGILE: 4, WEAK: 8}] * 4)
    report, out = tmp_path / "r.json", tmp_path / "p.int8.onnx"
    result = _run(int8_command, [probe, "-o", out, "--calib-images", images, "--verify-images", images,
                                 "--target", "onnxruntime", "--min-agreement", "99", "--json", report])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    others = [m for m in OnnxRuntimeInt8.methods if m != "entropy"]  # max, percentile: 205, no better
    assert [a["step"] for a in data["attempts"]] == ["plain", "equalized", *(f"method {m}" for m in others),
                                                     "fallback 1 node(s)"]
    assert [a["agreement"] for a in data["attempts"]] == pytest.approx(
        [1 - 12 / PIXELS, 1 - 8 / PIXELS, *(1 - 12 / PIXELS for _ in others), 1.0])
    assert data["repair_continued_from"] == {"model": "equalized", "step": "equalized", "method": "entropy",
                                             "agreement": pytest.approx(1 - 8 / PIXELS)}
    assert "repair continued from the equalized FP32 model, after step 'equalized' (method entropy" in result.output
    assert calls[-1] == (True, "entropy", (CONV,))  # the fallback converted the equalized model, entropy
    last = data["attempts"][-1]
    assert last["equalized"] and last["method"] == "entropy" and data["equalized"] and data["method"] == "entropy"
    written = read_onnx_info(out).extra["precision_repair"]
    assert written["equalized"] and written["method"] == "entropy" and written["kept_fp32"] == [CONV]
    # psp-export int8 --json: the written file's per-image agreement and lower bound (exact: all 4 images whole)
    assert data["after"]["per_image"] == [1.0] * 4 and data["after"]["lower_bound"] == 1.0
    assert data["before"]["per_image"] == [1 - 12 / PIXELS] * 4 and data["after"]["uncertain"] is True
