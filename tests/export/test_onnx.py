import numpy as np
import pytest
import torch

from export.onnx.exporter import export_checkpoint, export_onnx, feature_size
from export.parity import compare_outputs
from export.scenes import sample_batch
from pspcore.errors import InputError, PSPError
from pspcore.model_info import ModelInfo

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _run(path, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": batch})[0]


def _assert_matches_torch(path, model, info, size, batch, seed=7):
    inputs = sample_batch(info, size, batch, seed=seed)  # other inputs than the exporter's own check
    with torch.no_grad():
        expected = model(torch.from_numpy(inputs)).numpy()
    got = _run(path, inputs)
    assert got.shape == expected.shape
    report = compare_outputs(expected, got)
    assert report.max_rel_to_range <= 1e-4, report.describe()
    assert report.argmax_agreement == 1.0, report.describe()


@pytest.mark.parametrize("size,batch", [
    pytest.param((65, 65), 1, marks=pytest.mark.slow),  # 8n+1 sizes, as the reference uses
    pytest.param((97, 97), 3, marks=pytest.mark.slow),
    ((49, 81), 1),
    ((64, 128), 3),
])
def test_static_export_matches_pytorch(tmp_path, tiny_model, tiny_info, size, batch):
    # 49x81 -> feature 7x11 and 64x128 -> 8x16: neither divides by every bin (2, 3, 6).
    path = tmp_path / "m.onnx"
    result = export_onnx(tiny_model, tiny_info, path, size=size, batch=batch, verify=False)
    dims = [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [batch, 3, *size]
    assert result.info.input_size == size and not result.info.dynamic_batch and result.parity is None
    _assert_matches_torch(path, tiny_model, tiny_info, size, batch)


def test_dynamic_shape_model_is_exact_at_three_sizes(tmp_path, tiny_model, tiny_info):
    path = tmp_path / "dyn.onnx"
    result = export_onnx(tiny_model, tiny_info, path, size=(65, 65), dynamic_shape=True)
    assert result.info.dynamic_shape and len(result.checks) == 2 and result.parity.ok()
    # The in-graph pooling matrices cost about a dozen nodes each (8 of them), not a decomposition.
    assert result.node_count <= 3 * _layer_count(tiny_model), result.node_count
    for size, batch in [((65, 65), 1), ((49, 81), 3), ((64, 128), 1)]:
        assert feature_size(size) in {(9, 9), (7, 11), (8, 16)}
        _assert_matches_torch(path, tiny_model, tiny_info, size, batch)
    graph = onnx.load(path).graph
    resizes = [n for n in graph.node if n.op_type == "Resize"]
    assert resizes and all(_attrs(n)["coordinate_transformation_mode"] == b"align_corners" for n in resizes)


def _layer_count(model) -> int:
    """Layers of the deployed network: leaf modules without the aux head and dropout (78 for pspnet18)."""
    return sum(1 for name, m in model.named_modules() if not list(m.children())
               and not name.startswith("aux") and not isinstance(m, torch.nn.Dropout2d))


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def test_dynamic_batch_runs_at_any_batch(tiny_onnx, tiny_info):
    path, model = tiny_onnx
    _assert_matches_torch(path, model, tiny_info, (65, 65), 3)
    with pytest.raises(Exception):  # static H, W: another size is refused by ONNX Runtime
        _run(path, sample_batch(tiny_info, (49, 81), 1))


def test_graph_is_small_single_file_and_aligned(tiny_onnx):
    path, model = tiny_onnx
    proto = onnx.load(path, load_external_data=False)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no .data beside it
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert len(proto.graph.node) <= 2 * _layer_count(model), (len(proto.graph.node), _layer_count(model))
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"AveragePool", "GlobalAveragePool", "Loop", "If"}
    resizes = [n for n in proto.graph.node if n.op_type == "Resize"]
    assert len(resizes) == 5  # four pyramid levels and the final upsampling
    for node in resizes:
        assert _attrs(node)["coordinate_transformation_mode"] == b"align_corners"
        assert _attrs(node)["mode"] == b"linear"


def test_aux_head_is_not_exported_and_model_is_untouched(tiny_onnx):
    path, model = tiny_onnx
    shapes = {tuple(t.dims) for t in onnx.load(path).graph.initializer}
    assert tuple(model.aux[0].weight.shape) == (64, 128, 3, 3)
    assert (64, 128, 3, 3) not in shapes and (5, 64, 1, 1) not in shapes
    assert hasattr(model, "aux") and not model.training
    assert sum(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in model.modules()) == 4


def test_metadata_round_trip(tiny_onnx, tiny_info):
    path, _ = tiny_onnx
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    info = ModelInfo.from_props(props)
    expected = tiny_info.with_(input_size=(65, 65), output="logits", precision="fp32", dynamic_batch=True,
                               dynamic_shape=False, exporter=info.exporter)
    assert info == expected and info.exporter.startswith("pspnet-deploy ")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert ModelInfo.from_props(session.get_modelmeta().custom_metadata_map) == info


def test_labels_output_is_argmax_of_logits(tmp_path, tiny_model, tiny_info):
    path = tmp_path / "labels.onnx"
    result = export_onnx(tiny_model, tiny_info, path, size=(49, 81), output="labels")
    assert result.info.output == "labels" and result.parity.argmax_agreement == 1.0
    inputs = sample_batch(tiny_info, (49, 81), 3, seed=3)
    labels = _run(path, inputs)
    with torch.no_grad():
        expected = tiny_model(torch.from_numpy(inputs)).argmax(1).numpy()
    assert labels.dtype == np.uint8 and labels.shape == (3, 49, 81)
    assert np.array_equal(labels, expected)
    assert onnx.load(path).graph.output[0].name == "labels"


@pytest.mark.slow
def test_labels_beyond_256_classes_are_int32(tmp_path):
    from pspnet import create_model
    from pspnet.checkpoint import info_for_config
    from runtime.postprocess import to_labels

    model = create_model("pspnet18-tiny", num_classes=300, aux=False).eval()
    path = tmp_path / "many.onnx"
    export_onnx(model, info_for_config(model.config), path, size=(41, 41), output="labels")
    labels = _run(path, np.zeros((1, 3, 41, 41), np.float32))
    assert labels.dtype == np.int32  # TensorRT has no 16-bit integers; the runtime narrows it to uint16
    assert to_labels(labels, 300).dtype == np.uint16


def test_failed_verification_leaves_no_file(tmp_path, tiny_model, tiny_info, monkeypatch):
    import export.onnx.exporter as exporter

    real = exporter.compare_outputs
    monkeypatch.setattr(exporter, "compare_outputs", lambda ref, cand: real(ref, cand + 1.0))
    with pytest.raises(PSPError, match="differs from PyTorch"):
        export_onnx(tiny_model, tiny_info, tmp_path / "m.onnx", size=(65, 65))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("options,message", [
    (dict(size=(33, 33)), "at least 41"),
    (dict(size=(65, 40)), "at least 41"),
    (dict(size=(65, 65), opset=9), "opset 9"),
    (dict(size=(65, 65), output="probabilities"), "output must be"),
    (dict(size=(65, 65), batch=0), "batch must be"),
])
def test_bad_options_are_input_errors(tmp_path, tiny_model, tiny_info, options, message):
    with pytest.raises(InputError, match=message):
        export_onnx(tiny_model, tiny_info, tmp_path / "m.onnx", **options)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_path_fails_before_any_work(tmp_path, tiny_model, tiny_info):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        export_onnx(tiny_model, tiny_info, blocker / "m.onnx", size=(65, 65))
    with pytest.raises(InputError, match="is a directory"):
        export_onnx(tiny_model, tiny_info, tmp_path, size=(65, 65))


def test_export_semseg_checkpoint_reads_arch_and_classes(tmp_path, tiny_model):
    from pspcore.files import file_sha256

    checkpoint = tmp_path / "train_epoch_100.pth"
    torch.save({"epoch": 100, "state_dict": {f"module.{k}": v for k, v in tiny_model.state_dict().items()}},
               checkpoint)
    result = export_checkpoint(checkpoint, tmp_path / "m.onnx", size=(49, 49), batch=1)
    assert (result.info.arch, result.info.num_classes) == ("pspnet18-tiny", 5)
    assert result.info.source_sha256 == file_sha256(checkpoint) and result.parity.ok()
    assert [name for name, _ in result.checks] == ["2x3x49x49"]  # batch 1: a scene and a noise image
