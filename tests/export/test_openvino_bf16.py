"""psp-export bf16: OpenVINO IR that records bf16 as its inference precision, with the pooling, the output region
and the nodes repair keeps marked precise (OpenVINO's own means of keeping them f32), verified on OpenVINO by the
same gate, --fallback and --json report as FP16/INT8. On a CPU without bf16 OpenVINO runs it in f32, and the
conversion says so; the bf16 check itself runs where the CPU has bf16 and skips with the reason elsewhere.
Every written file is run again here and compared with FP32: the tests never take the conversion's word."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from export.precision.cli import bf16_command
from tests.export.scenes import SIZE

# One xdist group (run.sh: --dist loadgroup): the module's fixtures are built on one worker, not on both.
pytestmark = pytest.mark.xdist_group("openvino_bf16")

pytest.importorskip("openvino", reason="openvino is not installed (pip install '.[openvino]')")
pytest.importorskip("onnxruntime")


def _bf16(source, out, *args):
    return CliRunner().invoke(bf16_command, [str(source), "-o", str(out), *args])


def _one_error_line(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def _nothing_written(folder) -> bool:
    return not [p for p in folder.iterdir() if p.suffix in (".xml", ".bin") or p.name.startswith(".")]


def _rerun(fp32_path, written, batch):
    """The verdict of the written IR itself (openvino backend) against its FP32 source (ONNX Runtime)."""
    from export.evaluation import logits, open_runner
    from export.precision.verdict import judge

    with open_runner(fp32_path) as fp32, open_runner(written, backend="openvino") as other:
        return judge(logits(fp32, batch), logits(other, batch))


@pytest.fixture(scope="module")
def bf16_written(scene_onnx, tmp_path_factory):
    """(source, out, report, result): the scene network converted once with a JSON report."""
    folder = tmp_path_factory.mktemp("bf16")
    out, report = folder / "scene.xml", folder / "report.json"
    result = _bf16(scene_onnx[0], out, "--json", str(report))
    assert result.exit_code == 0, result.output
    return scene_onnx[0], out, json.loads(report.read_text()), result


def test_ir_records_bf16_and_the_runner_honours_it(bf16_written):
    from export.precision.targets.bf16 import cpu_has_bf16
    from pspcore.model_info import read_onnx_info
    from runtime.backends.openvino import OpenVINORunner, read_model, recorded_precision

    source, out, report, _ = bf16_written
    assert out.exists() and out.with_suffix(".bin").exists()
    assert recorded_precision(read_model(out)) == "bf16"
    source_info = read_onnx_info(source)
    with OpenVINORunner(out) as runner:
        info = runner.info
        assert runner.wanted == "bf16" and runner.wanted_by == "the IR's runtime_options"
        assert "bf16 asked by the IR's runtime_options" in runner.describe()
        assert runner.hint == ("bf16" if cpu_has_bf16() else "f32")
    # the description round trip: everything of the source, the precision and what the conversion did
    assert info.with_(precision="fp32", extra={}) == source_info.with_(extra={})
    assert info.precision == "bf16"
    assert info.extra["openvino"] == {"inference_precision": "bf16", "verified_in": report["runtime_precision"]}
    assert info.extra["precision_repair"]["agreement"] == pytest.approx(report["after"]["agreement"], abs=1e-6)


def test_report_fields_and_the_plain_words_about_this_cpu(bf16_written):
    from export.precision.targets.bf16 import NO_BF16, cpu_has_bf16

    _, _, report, result = bf16_written
    assert report["precision"] == "bf16" and report["target"] == "openvino" and report["min_agreement"] == 0.995
    assert report["verification"] == "drawn scene" and report["verification_images"] == 6
    assert report["after"]["agreement"] >= 0.995 and len(report["attempts"]) == 1 and report["sensitivity"]
    assert report["runtime_precision"] == ("bf16" if cpu_has_bf16() else "f32")
    # 6 drawn scenes, fewer than the images a sure figure needs: said once in the report, whatever the CPU
    uncertain = [w for w in report["warnings"] if "the figure is uncertain" in w]
    assert len(uncertain) == 1 and report["after"]["uncertain"] is True
    if cpu_has_bf16():
        assert NO_BF16 not in report["warnings"] and "no bf16" not in result.output
    else:  # one line in the log, one in the report: the gate above measured f32
        assert report["warnings"] == [NO_BF16, *uncertain]
        assert result.output.count(f"notice: {NO_BF16}") == 1
        assert "OpenVINO compiled the written file in f32" in result.output


def test_pooling_and_output_region_are_marked_precise_in_the_ir(bf16_written):
    """OpenVINO's own keep-f32 mark, read back from the written IR: on exactly the exact pooling and the output
    region (no repair was needed), on none of the other compute nodes."""
    import onnx

    from export.precision.graph import output_region, pooling_nodes
    from export.precision.targets.bf16 import kept_nodes, marked_nodes
    from runtime.backends.openvino import read_model

    source, out, report, _ = bf16_written
    model = onnx.load(str(source))
    kept = kept_nodes(model)
    assert len(pooling_nodes(model)) == 8 and "/network/Resize" in output_region(model)
    written = read_model(out)
    assert report["kept_fp32_by_runtime"] == marked_nodes(written, model, kept) == kept
    compute = [n.name for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    assert marked_nodes(written, model, compute) == pooling_nodes(model)


def test_written_ir_keeps_the_labels_when_run_again(bf16_written, tiny_info):
    from export.precision.verified import drawn_scenes

    source, out, report, _ = bf16_written
    rerun = _rerun(source, out, drawn_scenes(tiny_info, SIZE))
    assert rerun.agreement >= 0.995 and rerun.agreement == pytest.approx(report["after"]["agreement"])


def _negated_ir(source_model, exclude, info, dst):
    """save_bf16_ir writing IR whose logits are negated: a conversion that wrecks the labels."""
    import openvino.opset13 as ops

    from export.precision.ir import save_ir
    from export.precision.targets import bf16

    model = bf16.bf16_ov_model(source_model, exclude)
    result = model.get_results()[0]
    flipped = ops.negative(result.input_value(0))
    result.input(0).replace_source_output(flipped.output(0))
    return save_ir(model, info, dst)


def test_gate_refuses_garbage_with_fallback_none(scene_onnx, tmp_path, monkeypatch):
    from export.precision.targets import bf16

    monkeypatch.setattr(bf16, "save_bf16_ir", _negated_ir)  # every candidate, so the plain one too
    result = _bf16(scene_onnx[0], tmp_path / "m.xml", "--fallback", "none")
    assert result.exit_code == 1, result.output
    error = _one_error_line(result)
    assert "BF16 model keeps" in error and "below the gate 99.5%" in error and "nothing written" in error
    assert float(error.split("keeps ")[1].split("%")[0]) < 50
    assert _nothing_written(tmp_path)


def test_written_file_below_the_gate_is_removed(scene_onnx, tmp_path, monkeypatch):
    """The conversion runs the IR it wrote: a writer that gets it wrong fails in one line, nothing left."""
    from export.precision.targets.bf16 import Bf16Target

    monkeypatch.setattr(Bf16Target, "write", lambda self, model, source_model, exclude, info, dst: _negated_ir(
        source_model, tuple(exclude), info, dst))  # the written file only: the candidates pass
    result = _bf16(scene_onnx[0], tmp_path / "m.xml")
    assert result.exit_code == 1, result.output
    error = _one_error_line(result)
    assert "the written BF16 model m.xml keeps" in error and "it was removed" in error
    assert _nothing_written(tmp_path)


def test_bad_inputs_are_one_line_and_write_nothing(scene_onnx, tmp_path, monkeypatch):
    from export.precision.targets import bf16
    from pspcore.errors import BackendUnavailable

    named = _bf16(scene_onnx[0], tmp_path / "m.onnx")
    assert named.exit_code == 2 and "name the output <name>.xml" in _one_error_line(named)
    missing = _bf16(tmp_path / "nowhere.onnx", tmp_path / "m.xml")
    assert missing.exit_code == 2 and "nowhere.onnx" in _one_error_line(missing)

    def no_openvino():
        raise BackendUnavailable("the openvino backend needs the openvino package (pip install "
                                 "'pspnet-deploy[openvino]')")

    monkeypatch.setattr(bf16, "import_openvino", no_openvino)
    absent = _bf16(scene_onnx[0], tmp_path / "m.xml")
    assert absent.exit_code == 1 and "needs the openvino package" in _one_error_line(absent)
    assert _nothing_written(tmp_path)


def test_rounded_stand_in_ranks_the_node_bf16_cannot_hold(fp16_hostile_onnx):
    """The repair's ranking model: bf16 rounds the `difference` conv's weight 1 + 4e-4 to 1, which wipes the
    labels; the stand-in shows it (and the untouched FP32 graph does not), ranks that node first, and keeping
    it unrounded restores the labels."""
    import onnx

    from export.evaluation import logits, open_runner
    from export.precision.layerwise import compare_layers
    from export.precision.targets.bf16 import bf16_rounded_model
    from export.precision.verdict import judge
    from export.precision.verified import drawn_scenes
    from pspcore.model_info import read_onnx_info

    source = onnx.load(str(fp16_hostile_onnx))
    images = drawn_scenes(read_onnx_info(fp16_hostile_onnx), SIZE)
    with open_runner(fp16_hostile_onnx) as fp32:
        reference = logits(fp32, images)

    def agreement(model) -> float:
        import onnxruntime as ort

        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return judge(reference, np.concatenate([session.run(None, {"image": images[i:i + 1]})[0]
                                                for i in range(len(images))])).agreement

    rounded = bf16_rounded_model(source)
    assert agreement(rounded) < 0.5 and agreement(source) == 1.0
    ranked = sorted(compare_layers(source, rounded, images[:4]), key=lambda r: -r.jump)
    assert ranked[0].node == "difference"
    assert agreement(bf16_rounded_model(source, ("difference",))) >= 0.995


def test_repair_kept_nodes_are_marked_precise_in_the_ir(fp16_hostile_onnx, tiny_info, tmp_path):
    """What repair keeps reaches OpenVINO: the IR marks exactly those nodes (this graph has no pooling and no
    output region), so the CPU plugin leaves them in f32 when it lowers the rest to bf16."""
    import onnx

    from export.precision.targets.bf16 import marked_nodes, save_bf16_ir
    from runtime.backends.openvino import read_model

    source = onnx.load(str(fp16_hostile_onnx))
    save_bf16_ir(source, ("difference",), tiny_info.with_(precision="bf16"), tmp_path / "h.xml")
    written = read_model(tmp_path / "h.xml")
    assert marked_nodes(written, source, ["features", "difference", "classify"]) == ["difference"]
    save_bf16_ir(source, (), tiny_info.with_(precision="bf16"), tmp_path / "plain.xml")
    assert marked_nodes(read_model(tmp_path / "plain.xml"), source, ["features", "difference", "classify"]) == []


def _bf16_capable() -> bool:
    from runtime.backends.openvino import cpu_has_bf16

    return cpu_has_bf16()


NO_BF16_HERE = "this CPU has no bf16 (OpenVINO needs AMX or AVX512-BF16): the IR can only run in f32 here"


def _resize_ops(written, source):
    """The OpenVINO ops the written IR made from the ONNX logits Resize (the output region's upsampling)."""
    from export.precision.targets.bf16 import ops_of

    return ops_of(written, next(n for n in source.graph.node if n.name == "/network/Resize"))


def test_logits_resize_is_written_as_marked_matmuls_that_keep_the_fp32_logits(bf16_written):
    """On every CPU: the IR upsamples the logits with two MatMuls (R_h · x · R_wᵀ), not an Interpolate (which
    OpenVINO ran in bf16 on an AVX512-BF16 CPU despite the mark), all marked precise, and in f32 the IR's logits
    are the FP32 source's (ONNX Runtime's Resize) to float rounding."""
    import onnx

    from export.evaluation import logits, open_runner
    from export.precision.targets.bf16 import PRECISE_READ_BACK
    from export.precision.verified import drawn_scenes
    from pspcore.model_info import read_onnx_info
    from runtime.backends.openvino import OpenVINORunner, read_model

    source, out, _, _ = bf16_written
    model, written = onnx.load(str(source)), read_model(out)
    ops = _resize_ops(written, model)
    assert "Interpolate" not in {op.get_type_name() for op in ops}
    assert [op.get_type_name() for op in ops if op.get_type_name() == "MatMul"] == ["MatMul", "MatMul"]
    assert all(any(key in op.get_rt_info() for key in PRECISE_READ_BACK) for op in ops)
    assert [r.input_value(0).get_node().get_type_name() for r in written.get_results()] == ["MatMul"]
    images = drawn_scenes(read_onnx_info(source), SIZE)[:3]
    with open_runner(source) as fp32, OpenVINORunner(out, precision="fp32") as f32:
        reference, mine = logits(fp32, images), logits(f32, images)
    assert np.abs(mine - reference).max() <= 1e-5 * max(1.0, float(np.abs(reference).max()))


# Layers that read only their input's dimensions: OpenVINO reports them in the precision of the tensor they
# measure (the classifier's bf16 output), though no value of it is rounded or computed with.
SHAPE_ONLY = ("ShapeOf",)


@pytest.mark.skipif(not _bf16_capable(), reason=NO_BF16_HERE)
def test_bf16_for_real_keeps_the_pooling_and_output_region_f32(bf16_written):
    """On a bf16 CPU (AMX or AVX512-BF16): OpenVINO's compiled model runs every layer made from the marked nodes
    (the pooling MatMuls, the logits' resize MatMuls) in f32 and the backbone's convolutions in bf16."""
    import onnx

    from export.precision.targets.bf16 import kept_nodes, ops_of
    from runtime.backends.openvino import OpenVINORunner, read_model

    source, out, _, _ = bf16_written
    model, written = onnx.load(str(source)), read_model(out)
    marked = {op.get_friendly_name() for node in model.graph.node if node.name in kept_nodes(model)
              for op in ops_of(written, node)}
    resize = {op.get_friendly_name() for op in _resize_ops(written, model)}
    with OpenVINORunner(out) as runner:
        assert runner.hint == "bf16"
        layers = runner.layer_precisions()
    kept = [(kind, precision) for kind, precision, names in layers if marked & set(names)]
    resized = [(kind, precision) for kind, precision, names in layers if resize & set(names)]
    assert "MatMul" in {kind for kind, _ in kept} and "Interpolate" not in {kind for kind, _ in resized}, kept
    assert {kind for kind, _ in resized} & {"MatMul", "FullyConnected"}, resized
    # f32 (or i32: the output size's arithmetic); shape-only layers report the measured tensor's precision
    assert not [layer for layer in kept if layer[1] == "bf16" and layer[0] not in SHAPE_ONLY], kept
    assert any(kind == "Convolution" and precision == "bf16" for kind, precision, _ in layers)


@pytest.mark.skipif(not _bf16_capable(), reason=NO_BF16_HERE)
def test_bf16_for_real_repairs_and_keeps_the_marked_nodes_f32(fp16_hostile_onnx, tmp_path):
    """On a bf16 CPU: plain bf16 loses the hostile network's labels, repair keeps `difference` FP32 through the
    IR's mark, and OpenVINO's compiled model runs that node in f32 and the others in bf16."""
    from export.precision.verified import drawn_scenes
    from pspcore.model_info import read_onnx_info
    from runtime.backends.openvino import OpenVINORunner

    out, report_path = tmp_path / "h.xml", tmp_path / "r.json"
    result = _bf16(fp16_hostile_onnx, out, "--json", str(report_path))
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    # no word of f32 on this CPU; the one warning is the uncertain figure of its 6 drawn verification scenes
    assert report["runtime_precision"] == "bf16" and report["after"]["uncertain"]
    assert [w for w in report["warnings"] if "the figure is uncertain" not in w] == [] and report["warnings"]
    assert not report["attempts"][0]["passed"] and report["before"]["agreement"] < 0.5
    assert "difference" in report["kept_fp32"] and report["after"]["agreement"] >= 0.995
    with OpenVINORunner(out) as runner:
        assert runner.hint == "bf16"
        layers = {}
        for _, precision, names in runner.layer_precisions():
            for name in names:
                layers.setdefault(name.split("/")[0], set()).add(precision)
    assert layers["difference"] == {"f32"} and "bf16" in layers["features"]
    rerun = _rerun(fp16_hostile_onnx, out, drawn_scenes(read_onnx_info(fp16_hostile_onnx), SIZE))
    assert rerun.agreement == pytest.approx(report["after"]["agreement"])
