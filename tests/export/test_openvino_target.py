"""psp-export int8 --target openvino on the outlier network of issue #13: judged on OpenVINO itself, plain INT8
fails the gate, --fallback none refuses and writes nothing, the default repairs it and writes IR that the
openvino backend runs with the model's description. Skips where openvino is not installed."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from export.precision.cli import int8_command

pytest.importorskip("openvino", reason="openvino is not installed (pip install '.[openvino]')")


def _int8(tmp_path, source, scenes, *args, name="m.xml"):
    out = tmp_path / name
    result = CliRunner().invoke(int8_command, [str(source), "-o", str(out), "--calib-images", str(scenes),
                                               "--target", "openvino", *args])
    return result, out


def _nothing_written(tmp_path) -> bool:
    return not [p for p in tmp_path.iterdir() if p.name != "report.json"]


def test_gate_refuses_the_outlier_network_and_writes_nothing(outlier_onnx, scenes_dir, tmp_path, monkeypatch):
    from runtime.backends.openvino import OpenVINORunner

    judged = []
    load = OpenVINORunner.load

    def spy(runner):
        judged.append(runner.model_path)
        load(runner)

    monkeypatch.setattr(OpenVINORunner, "load", spy)
    result, out = _int8(tmp_path, outlier_onnx, scenes_dir, "--fallback", "none")
    assert judged, "the INT8 candidate must be judged on OpenVINO, not on ONNX Runtime"
    assert result.exit_code == 1, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "below the gate 98%" in errors[0] and "nothing written" in errors[0]
    assert _nothing_written(tmp_path)


def test_repair_makes_the_outlier_network_pass_on_openvino(outlier_onnx, scenes_dir, tmp_path):
    from runtime.backends.openvino import OpenVINORunner

    result, out = _int8(tmp_path, outlier_onnx, scenes_dir, "--json", str(tmp_path / "report.json"))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["target"] == "openvino" and len(report["attempts"]) > 1  # plain failed, repair ran
    assert report["before"]["agreement"] < 0.98 <= report["after"]["agreement"]
    assert out.exists() and out.with_suffix(".bin").exists()
    with OpenVINORunner(out) as runner:
        assert runner.info.precision == "int8" and runner.info.extra["int8_target"] == "openvino"
        assert runner.info.extra["precision_repair"]["agreement"] == pytest.approx(report["after"]["agreement"],
                                                                                   abs=1e-6)
        assert runner.hint == "f32"


def test_openvino_target_writes_xml_only(outlier_onnx, scenes_dir, tmp_path):
    result, _ = _int8(tmp_path, outlier_onnx, scenes_dir, name="m.onnx")
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "name the output <name>.xml" in errors[0]
    assert _nothing_written(tmp_path)


def _runtime_precisions(ir_path, nodes: list[str]) -> dict[str, set[str]]:
    """ONNX node name -> the precisions OpenVINO's compiled model runs the layers made from it in (its runtime
    model's own record: u8/i8 for an INT8 kernel, f32 for a node left unquantized)."""
    from runtime.backends.openvino import OpenVINORunner

    found: dict[str, set[str]] = {node: set() for node in nodes}
    with OpenVINORunner(ir_path) as runner:
        for kind, precision, names in runner.layer_precisions():
            for node in nodes:
                if kind == "Convolution" and {node, f"{node}/WithoutBiases"} & set(names):
                    found[node].add(precision)
    return found


def test_nncf_keeps_the_nodes_repair_names_unquantized(outlier_onnx, scenes_dir, tmp_path):
    """Repair's FP32 fallback hands node names to the candidate conversion (Search.convert), which for
    --method nncf become NNCF's IgnoredScope: in the written IR OpenVINO runs the kept conv in f32, while its
    neighbour, not kept, runs in INT8."""
    import onnx

    from export.precision.graph import calibration_batch
    from export.precision.ir import save_ir
    from export.precision.repair import Job, Search
    from export.precision.target import create_target
    from pspcore.model_info import read_onnx_info

    info = read_onnx_info(outlier_onnx)
    batch = calibration_batch(sorted(scenes_dir.iterdir())[:4], info, (65, 65)).batch
    job = Job(source=outlier_onnx, source_model=onnx.load(str(outlier_onnx)), info=info,
              target=create_target("int8", "openvino", "nncf"), method="nncf", calib=batch, verify=batch[:1],
              reference=batch[:1], min_agreement=0.98)
    kept, other = "/network/cls/cls.4/Conv", "/network/cls/cls.0/Conv"
    candidate = Search(job, tmp_path).convert("fallback 1 node(s)", outlier_onnx, "nncf", [kept], False)
    save_ir(candidate.model, info.with_(precision="int8"), tmp_path / "m.xml")
    precisions = _runtime_precisions(tmp_path / "m.xml", [kept, other])
    assert precisions[kept] == {"f32"}
    assert precisions[other] and precisions[other] <= {"u8", "i8"}
