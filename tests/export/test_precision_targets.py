"""The precision targets' registry: it holds the five targets, each declaring itself consistently (the file it
writes is one its judging runtime reads, its gate and methods hold together, the commands offer what it
declares); a declaration that does not hold is refused; and a target registered here, outside the package, is
picked up by psp-export int8 and by the verified conversion without a line of them changed (adding a target is
one module, docs/extending.md)."""
from pathlib import Path

import pytest
from click.testing import CliRunner

from export.precision.cli import bf16_command, fp16_command, int8_command
from export.precision.int8 import Int8Target
from export.precision.target import (PrecisionTarget, all_methods, create_target, declaration_problems,
                                     default_gate, engine_precisions, engine_target, register_target, target_class,
                                     targets, unregister_target)
from export.precision.verdict import GateError
from export.precision.verified import Conversion, convert_verified
from export.scenes import write_scenes
from pspcore.errors import InputError
from pspcore.model_info import read_onnx_info
from pspcore.registry import CATCH_ALL, runner_class
from runtime.backends.openvino import IR_SUFFIX, WEIGHTS_SUFFIX

FIVE = [("fp16", None), ("bf16", "openvino"), ("int8", "tensorrt"), ("int8", "onnxruntime"), ("int8", "openvino")]


def _read_by_its_runtime(cls, folder: Path) -> bool:
    """The file the target writes is one its judging backend claims (not merely tries, like any file)."""
    priority = runner_class(cls.backend).auto_priority(str(folder / f"m{cls.suffix}"))
    return priority is not None and priority > CATCH_ALL


def test_the_registry_holds_the_five_targets():
    assert [(t.precision, t.name) for t in targets()] == FIVE
    assert [t.name for t in targets("int8")] == ["tensorrt", "onnxruntime", "openvino"]
    assert target_class("bf16").name == "openvino" and target_class("fp16").name is None
    with pytest.raises(InputError, match="INT8 target must be one of tensorrt, onnxruntime, openvino"):
        target_class("int8")
    with pytest.raises(InputError, match="precision must be one of fp16, bf16, int8, got 'fp8'"):
        target_class("fp8")
    # what psp-build-engine converts to: the files TensorRT builds as they are
    assert engine_precisions() == ["fp16", "int8"]
    assert engine_target("fp16").name is None and engine_target("int8").name == "tensorrt"
    with pytest.raises(InputError, match="no bf16 conversion for TensorRT: it builds fp16, int8"):
        engine_target("bf16")


@pytest.mark.parametrize("key", FIVE, ids=lambda key: "-".join(filter(None, key)))
def test_each_target_declares_itself_consistently(key, tmp_path):
    cls = target_class(*key)
    assert declaration_problems(cls) == [] and cls.help
    assert _read_by_its_runtime(cls, tmp_path)
    target = cls()
    assert target.method == (cls.methods[0] if cls.methods else None)
    written = tmp_path / f"m{cls.suffix}"
    target.check_output(written)
    with pytest.raises(InputError, match=f"name the output <name>{cls.suffix}"):
        target.check_output(tmp_path / "m.engine")
    files = target.files(written)
    # IR is the .xml and its weights beside it; every other file stands alone
    assert files[0] == written and [f.suffix for f in files[1:]] == ([WEIGHTS_SUFFIX] if cls.suffix == IR_SUFFIX
                                                                      else [])
    for file in files:
        file.write_text("x")
    target.remove(written)
    assert not any(file.exists() for file in files)
    assert default_gate(cls.precision) == cls.default_gate


def test_the_commands_offer_what_the_targets_declare():
    options = {p.name: p for p in int8_command.params}
    assert list(options["target"].type.choices) == [t.name for t in targets("int8")]
    assert list(options["method"].type.choices) == all_methods("int8")
    for command, precision in ((fp16_command, "fp16"), (bf16_command, "bf16"), (int8_command, "int8")):
        gate = {p.name: p for p in command.params}["min_agreement"].default
        assert gate == pytest.approx(100 * default_gate(precision))


def test_the_suffix_check_notices_a_file_its_runtime_does_not_read(tmp_path):
    class Engine(PrecisionTarget):  # an ONNX Runtime-judged target writing TensorRT engines: not registered
        precision, default_gate, suffix = "int4", 0.9, ".engine"

    assert not _read_by_its_runtime(Engine, tmp_path)


@pytest.mark.parametrize("declared,problem", [
    ({"default_gate": 98.0}, "default_gate must be a fraction"),
    ({"methods": ()}, "calibrated on images offers calibration methods"),
    ({"methods": ("max", "max")}, "calibration methods repeated"),
    ({"suffix": "onnx"}, "suffix must be a lower-case file suffix"),
    ({"name": None}, "several int8 targets: each needs a name"),
    ({"name": "onnxruntime"}, "registered twice"),
])
def test_a_declaration_that_does_not_hold_is_refused(declared, problem):
    cls = type("Broken", (Int8Target,), {"name": "broken", "methods": ("max",), "help": "x", **declared})
    with pytest.raises(ValueError, match=problem):
        register_target(cls)
    assert [(t.precision, t.name) for t in targets()] == FIVE


@pytest.fixture
def fake_int8():
    """An INT8 target registered by a test, like a module of its own would: ONNX Runtime's quantizer, counted."""
    calls = []
    base = target_class("int8", "onnxruntime")

    @register_target
    class FakeInt8(base):
        name = "fake"
        help = "a target registered by a test"
        methods = ("max",)

        def quantize(self, src, work, batch, method, exclude=()):
            calls.append((method, tuple(exclude)))
            return super().quantize(src, work, batch, method, exclude)

    yield calls
    unregister_target(FakeInt8)


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calib")
    write_scenes(folder, [(72 + 8 * i, 96) for i in range(6)])
    return folder


@pytest.mark.slow
def test_a_registered_target_is_offered_and_converted_by_psp_export_int8(fake_int8, tiny_onnx, calib_dir, tmp_path):
    shown = CliRunner().invoke(int8_command, ["-h"])
    assert "fake: a target registered by a test" in " ".join(shown.output.split())
    out = tmp_path / "m.int8.onnx"
    args = [str(tiny_onnx[0]), "-o", str(out), "--calib-images", str(calib_dir), "--target", "fake"]
    wrong = CliRunner().invoke(int8_command, [*args, "--method", "entropy"])
    assert wrong.exit_code == 2 and "calibration method for fake must be one of max" in wrong.output
    result = CliRunner().invoke(int8_command, [*args, "--method", "max", "--min-agreement", "0"])
    assert result.exit_code == 0, result.output
    assert fake_int8 and fake_int8[0] == ("max", ())
    info = read_onnx_info(out)
    assert info.precision == "int8" and info.extra["int8_target"] == "fake"
    assert info.extra["calibration"]["method"] == "max"


def test_an_unregistered_target_is_refused_by_the_command(tiny_onnx, calib_dir, tmp_path):
    result = CliRunner().invoke(int8_command, [str(tiny_onnx[0]), "-o", str(tmp_path / "m.onnx"), "--calib-images",
                                               str(calib_dir), "--target", "fake"])
    assert result.exit_code == 2 and "'fake' is not one of" in result.output and not list(tmp_path.iterdir())


def _copy_target(negate: bool):
    class Copy(PrecisionTarget):
        """A new precision: the FP32 graph itself (or its logits negated: garbage for the gate)."""

        precision = "copy"
        help = "the FP32 model as it is"
        default_gate = 0.999

        def convert(self, source, source_model, exclude, calib, method):
            import onnx

            model = onnx.load(str(source))
            if negate:
                output = model.graph.output[0].name
                for node in model.graph.node:
                    node.output[:] = [name if name != output else output + "_raw" for name in node.output]
                model.graph.node.append(onnx.helper.make_node("Neg", [output + "_raw"], [output], name="negate"))
            return model

    return Copy


@pytest.mark.parametrize("negate", [False, True], ids=["same", "negated"])
def test_a_new_precision_runs_through_the_verified_conversion(negate, tiny_onnx, tmp_path):
    """The verified pipeline asks the target for everything: a precision it has never heard of is converted,
    judged at the target's gate and written, or refused with nothing written."""
    cls = register_target(_copy_target(negate))
    out = tmp_path / "m.copy.onnx"
    try:
        if negate:
            with pytest.raises(GateError, match="COPY model keeps .* below the gate 99.9%"):
                convert_verified(tiny_onnx[0], out, Conversion("copy", fallback="none"))
            assert not out.exists()
            return
        report = convert_verified(tiny_onnx[0], out, Conversion("copy"))
    finally:
        unregister_target(cls)
    assert report.precision == "copy" and report.target is None and report.min_agreement == 0.999
    assert report.after["agreement"] == 1.0 and report.calibration_images == 0
    assert read_onnx_info(out).precision == "copy"
    with pytest.raises(InputError, match="got 'copy'"):
        create_target("copy")
