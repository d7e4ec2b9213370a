"""The OpenVINO backend: FP32 parity with ONNX Runtime (and really FP32: the compiled model's precision hint),
the model description through an IR's rt_info, labels appended in the graph, reshapes, auto's choice, and bad
inputs as one clear line with nothing written. Skips where openvino is not installed."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner

from pspcore.errors import BackendUnavailable, InputError
from tests.runtime.conftest import make_onnx, tiny_info


@pytest.fixture(scope="module")
def ov():
    return pytest.importorskip("openvino", reason="openvino is not installed (pip install '.[openvino]')")


@pytest.fixture(scope="module")
def pspnet_onnx(tmp_path_factory):
    """A tiny PSPNet-18 (random weights, randomised BN statistics) exported at 65x65: Resize, the pooling
    MatMuls and dilated convs, what parity has to hold on."""
    torch = pytest.importorskip("torch")
    from experiments.export_report import randomize_batchnorm
    from export.onnx.exporter import export_onnx
    from pspnet import create_model
    from pspnet.checkpoint import info_for_config

    torch.manual_seed(0)
    model = randomize_batchnorm(create_model("pspnet18-tiny", num_classes=5, aux=False)).eval()
    path = tmp_path_factory.mktemp("ov") / "pspnet18.onnx"
    export_onnx(model, info_for_config(model.config), path, size=(65, 65))
    return path


def _batch(n=2, size=(65, 65), seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, *size)).astype(np.float32)


def _rel_err(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_fp32_matches_onnxruntime_and_runs_in_f32(ov, pspnet_onnx):
    from runtime.backends.onnxruntime import OnnxRuntimeRunner
    from runtime.backends.openvino import OpenVINORunner

    x = _batch()
    with OpenVINORunner(pspnet_onnx) as runner:
        out = runner.infer(x)
        # the property of the compiled model itself, not the option we passed
        assert runner.hint == "f32" and "f32" in runner.describe()
        assert runner.info.num_classes == 5 and runner.info.input_size == (65, 65)
    reference = OnnxRuntimeRunner(pspnet_onnx).infer(x)
    assert out.shape == reference.shape == (2, 5, 65, 65)
    assert _rel_err(out, reference) <= 1e-4


def test_garbage_is_not_parity(ov, pspnet_onnx):
    """The parity measure above must fail on a different network's output."""
    from runtime.backends.openvino import OpenVINORunner

    x = _batch()
    with OpenVINORunner(pspnet_onnx) as runner:
        out = runner.infer(x)
    assert _rel_err(out[::-1], out) > 1e-4


def test_bf16_is_asked_for_not_assumed(ov, tmp_path):
    from runtime.backends.openvino import OpenVINORunner, cpu_has_bf16

    model = make_onnx(tmp_path / "m.onnx")
    with OpenVINORunner(model, precision="bf16") as runner:
        runner.infer(_batch(1, (32, 32)))
        capable = cpu_has_bf16()
        assert runner.hint == ("bf16" if capable else "f32")
        assert capable or any("no bf16" in note for note in runner.notes)
    with pytest.raises(InputError, match="fp32 or bf16"):
        OpenVINORunner(model, precision="fp8")


def test_ir_carries_the_model_info(ov, tmp_path):
    from runtime.backends.openvino import OpenVINORunner, read_model, write_model_info

    info = tiny_info(precision="int8", dataset="scenes")
    source = make_onnx(tmp_path / "m.onnx", info=None)  # no metadata in the ONNX: the IR's rt_info must hold it
    model = read_model(source)
    write_model_info(model, info)
    ov.save_model(model, str(tmp_path / "m.xml"))
    with OpenVINORunner(tmp_path / "m.xml") as runner:
        assert runner.info == info
        assert runner.infer(_batch(2, (32, 32))).shape == (2, 4, 32, 32)


def test_the_precision_an_ir_records_is_honoured_and_shown(ov, tmp_path):
    """An IR recording INFERENCE_PRECISION_HINT in its rt_info runtime_options (psp-export bf16) is compiled with
    it and says who asked; the precision option still wins; an IR recording nothing runs in f32."""
    from runtime.backends.openvino import OpenVINORunner, cpu_has_bf16, read_model

    model = read_model(make_onnx(tmp_path / "m.onnx"))  # its description says fp32: only the IR asks for bf16
    ov.save_model(model, str(tmp_path / "plain.xml"))
    model.set_rt_info("bf16", ["runtime_options", "INFERENCE_PRECISION_HINT"])
    ov.save_model(model, str(tmp_path / "bf16.xml"))
    capable = cpu_has_bf16()
    with OpenVINORunner(tmp_path / "bf16.xml") as runner:
        assert (runner.wanted, runner.wanted_by) == ("bf16", "the IR's runtime_options")
        assert runner.hint == ("bf16" if capable else "f32")
        assert runner.describe() == f"openvino[cpu,{runner.hint}, bf16 asked by the IR's runtime_options] (fp32)"
    with OpenVINORunner(tmp_path / "bf16.xml", precision="fp32") as runner:
        assert (runner.wanted, runner.wanted_by, runner.hint) == ("f32", "the precision option", "f32")
    with OpenVINORunner(tmp_path / "plain.xml") as runner:
        assert (runner.wanted, runner.wanted_by, runner.hint) == ("f32", None, "f32")
        assert runner.describe() == "openvino[cpu,f32] (fp32)"


def test_onnx_metadata_is_read(ov, tmp_path):
    from runtime.backends.openvino import OpenVINORunner

    with OpenVINORunner(make_onnx(tmp_path / "m.onnx")) as runner:
        assert runner.info == tiny_info(dynamic_batch=True)


def test_labels_output_is_the_argmax_in_the_graph(ov, pspnet_onnx):
    from runtime.backends.openvino import OpenVINORunner

    x = _batch()
    with OpenVINORunner(pspnet_onnx) as runner:
        logits = runner.infer(x)
    with OpenVINORunner(pspnet_onnx, output="labels") as runner:
        labels = runner.infer(x)
        assert runner.info.output == "labels"
    assert labels.dtype == np.uint8 and labels.shape == (2, 65, 65)
    np.testing.assert_array_equal(labels, logits.argmax(1))


@pytest.mark.parametrize("classes", [4, 256, 257])
def test_labels_in_the_graph_have_the_exported_models_type(ov, tmp_path, classes):
    """The appended argmax gives what an exported model's own labels output gives (one rule: uint8 up to 256
    classes, int32 above)."""
    from pspcore.label_maps import graph_label_dtype
    from runtime.backends.openvino import append_labels

    model = ov.Core().read_model(str(make_onnx(tmp_path / "m.onnx", num_classes=classes)))
    append_labels(model)
    assert model.output(0).get_element_type().to_dtype() == graph_label_dtype(classes)


def test_reshape_to_a_fixed_batch_and_size(ov, tmp_path):
    from runtime.backends.openvino import OpenVINORunner

    model = make_onnx(tmp_path / "dyn.onnx", dynamic_shape=True)
    with OpenVINORunner(model) as runner:
        assert runner.input_spec.size is None
        assert runner.infer(_batch(1, (24, 40))).shape == (1, 4, 24, 40)
        assert runner.infer(_batch(3, (32, 32))).shape == (3, 4, 32, 32)
    with OpenVINORunner(model, batch=2, size=(24, 40)) as runner:
        assert runner.input_spec.size == (24, 40) and runner.input_spec.fixed_batch == 2
        assert runner.infer(_batch(3, (24, 40))).shape == (3, 4, 24, 40)  # split and padded by the base
    with pytest.raises(InputError, match="dynamic shape"):
        OpenVINORunner(make_onnx(tmp_path / "fixed.onnx"), size=(24, 40)).activate()


def test_auto_priority(ov, tmp_path):
    from runtime.backends.openvino import OpenVINORunner

    fp32 = make_onnx(tmp_path / "m.onnx")
    assert OpenVINORunner.auto_priority(str(tmp_path / "m.xml")) == 100  # only OpenVINO runs an IR
    assert OpenVINORunner.auto_priority(str(fp32)) < 10  # FP32 ONNX: ONNX Runtime (10) is not slower
    assert OpenVINORunner.auto_priority(str(tmp_path / "m.pth")) is None
    from pspcore.registry import resolve_backend

    assert resolve_backend("auto", tmp_path / "m.xml")[0] == "openvino"


def test_ir_without_its_bin_is_one_line_and_nothing_written(ov, tmp_path):
    from runtime.backends.openvino import read_model
    from runtime.cli import main

    model = read_model(make_onnx(tmp_path / "m.onnx"))
    ov.save_model(model, str(tmp_path / "m.xml"))
    (tmp_path / "m.bin").unlink()
    image = tmp_path / "in.png"
    import cv2

    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    out = tmp_path / "out.png"
    result = CliRunner().invoke(main, [str(tmp_path / "m.xml"), str(image), "-o", str(out), "-q"])
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "m.bin is missing" in errors[0] and "Traceback" not in result.output
    assert not out.exists()


def test_corrupt_ir_is_an_input_error(ov, tmp_path):
    from runtime.backends.openvino import OpenVINORunner

    (tmp_path / "bad.xml").write_text("<net><layers><layer id='0' type='Nope'/></net>")
    (tmp_path / "bad.bin").write_bytes(b"\0" * 16)
    with pytest.raises(InputError, match="not a model OpenVINO can read") as err:
        OpenVINORunner(tmp_path / "bad.xml").activate()
    assert "\n" not in str(err.value)


def test_openvino_not_installed_is_one_clear_line(tmp_path, monkeypatch):
    from runtime.backends.openvino import OpenVINORunner

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(BackendUnavailable, match=r"needs the openvino package \(pip install") as err:
        OpenVINORunner(make_onnx(tmp_path / "m.onnx")).activate()
    assert "\n" not in str(err.value)


def test_psp_infer_asks_openvino_for_labels_unless_tiling(ov, tiny_model, tiny_video, tmp_path):
    """psp-infer takes the argmax inside OpenVINO's graph (no logits copied out) and labels frames exactly as
    ONNX Runtime's logits do; with --tile (which merges logits) it asks for none."""
    import cv2

    from runtime.cli import labels_in_graph, main

    assert labels_in_graph("openvino", str(tiny_model), tile=False) == {"output": "labels"}
    assert labels_in_graph("openvino", str(tiny_model), tile=True) == {}
    assert labels_in_graph("onnxruntime", str(tiny_model), tile=False) == {}  # runs the model as exported
    masks = {}
    for backend in ("openvino", "onnxruntime"):
        result = CliRunner().invoke(main, [str(tiny_model), str(tiny_video), "-o", str(tmp_path / f"{backend}.mp4"),
                                           "--backend", backend, "--masks-dir", str(tmp_path / backend), "-q"])
        assert result.exit_code == 0, result.output
        masks[backend] = np.stack([cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
                                   for f in sorted((tmp_path / backend).iterdir())])
    assert masks["openvino"].shape == masks["onnxruntime"].shape and len(masks["openvino"]) == 30
    assert (masks["openvino"] == masks["onnxruntime"]).mean() >= 0.999
