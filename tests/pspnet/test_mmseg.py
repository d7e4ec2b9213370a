"""mmsegmentation PSPNet checkpoints load unchanged and export exactly: checkpoints are written from an independent
re-creation of mmseg's model (tests/pspnet/mmseg_reference.py) with its key names, in its 0.x and 1.x formats."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pspcore.errors import CheckpointError
from pspnet import create_model, load_checkpoint, load_model
from pspnet.checkpoint import read_checkpoint
from pspnet.labels import CITYSCAPES_NAMES, CITYSCAPES_PALETTE
from pspnet.mmseg import parse_config_text
from tests.pspnet import mmseg_reference as R

# One xdist group (run.sh: --dist loadgroup): the module's fixtures are built on one worker, not on both.
pytestmark = pytest.mark.xdist_group("mmseg")

CITYSCAPES = dict(classes=CITYSCAPES_NAMES, palette=[list(c) for c in CITYSCAPES_PALETTE])


def rel_error(expected: torch.Tensor | np.ndarray, got) -> float:
    expected, got = np.asarray(expected), np.asarray(got)
    return float(np.abs(expected - got).max() / np.abs(expected).max())


def agreement(expected, got) -> float:
    return float((np.asarray(expected).argmax(1) == np.asarray(got).argmax(1)).mean())


def reference(seed: int = 0, **options) -> tuple[dict, R.EncoderDecoder]:
    model = R.model_dict(**{"depth": 18, "num_classes": 19, **options})
    return model, R.randomize(R.build(model), seed)


def write_0x(path, model: dict, ref, **meta):
    """mmseg 0.x: meta with the config text, CLASSES and PALETTE."""
    config = R.config_text(model, dataset_type="CityscapesDataset", crop_size=(512, 1024))
    R.mmseg_checkpoint(path, ref, meta_format="0.x", config=config, **{**CITYSCAPES, **meta})
    return path


def assert_same_logits(ref, model, sizes=((65, 65), (71, 93))):
    for size in sizes:  # 71x93: a 9x12 feature map, which the 6x6 and 3x3... bins do not divide
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
        with torch.no_grad():
            expected, got = ref(x), model(x)
        assert rel_error(expected, got) <= 1e-4, size


@pytest.fixture(scope="module")
def r18(tmp_path_factory):
    model, ref = reference()
    return model, ref, write_0x(tmp_path_factory.mktemp("mmseg") / "pspnet_r18-d8.pth", model, ref)


def test_reference_writes_mmseg_key_names():
    # Checked once against mmsegmentation 1.2.2's own MODELS.build(pspnet_r18-d8 config): same keys, same order.
    keys = list(R.build(R.model_dict(18, 19)).state_dict())
    assert len(keys) == 172 and keys[:2] == ["backbone.stem.0.weight", "backbone.stem.1.weight"]
    assert "decode_head.psp_modules.3.1.conv.weight" in keys and "auxiliary_head.convs.0.bn.running_var" in keys
    assert keys[keys.index("backbone.layer4.1.bn2.num_batches_tracked") + 1] == "decode_head.conv_seg.weight"


@pytest.mark.parametrize("backbone, arch, stem_key", [("ResNetV1c", "mmseg-r18-d8", "layer0.6.weight"),
                                                      ("ResNet", "mmseg-r18b-d8", "layer0.0.weight")])
def test_0x_checkpoint_loads_with_its_classes_and_computes_mmseg_forward(tmp_path, backbone, arch, stem_key):
    model, ref = reference(backbone=backbone)
    path = write_0x(tmp_path / "ckpt.pth", model, ref)
    net, info = load_model(path)
    assert net.config.arch == arch and net.config.aux
    assert (net.config.head_channels, net.config.ppm_channels, net.config.aux_channels) == (128, 128, 64)
    assert net.state_dict()[stem_key].shape[0] == 64  # 32-32-64 deep stem, or the 7x7 conv to 64
    assert info.class_names == CITYSCAPES_NAMES and info.palette == CITYSCAPES_PALETTE
    assert info.dataset == "cityscapes" and info.input_size == (512, 1024) and info.num_classes == 19
    assert info.extra["mmseg_test_cfg"] == {"mode": "whole"}
    assert_same_logits(ref, net)
    deployed = create_model(arch, 19, aux=False).eval()  # the factory's variant takes the same file
    assert load_checkpoint(deployed, path).class_names == CITYSCAPES_NAMES
    assert_same_logits(ref, deployed, sizes=((65, 65),))


def test_1x_checkpoint_without_config_assumes_d8_with_a_notice(tmp_path, capsys):
    model, ref = reference(num_classes=150, seed=1)
    names = tuple(f"class {i}" for i in range(150))
    palette = [[i, 255 - i, (7 * i) % 256] for i in range(150)]
    path = tmp_path / "ade.pth"
    R.mmseg_checkpoint(path, ref, meta_format="1.x", classes=names, palette=palette)
    net, info = load_model(path)
    assert "assuming mmseg's d8 layout" in capsys.readouterr().err
    assert info.class_names == names and info.palette == tuple(map(tuple, palette)) and info.num_classes == 150
    assert_same_logits(ref, net)


def test_config_text_decides_what_the_weights_cannot_tell(tmp_path):
    """align_corners=True (the 769x769 configs) and other dilations change the numbers, not the weights."""
    model, ref = reference(align_corners=True, dilations=(1, 1, 1, 2), contract_dilation=False, seed=2)
    net, _ = load_model(write_0x(tmp_path / "769.pth", model, ref))
    assert net.config.align_corners and net.config.dilations == (1, 1, 1, 2) and not net.config.contract_dilation
    assert_same_logits(ref, net)


def test_config_text_is_parsed_not_run():
    text = ("import os\nos.system('false')\nnorm_cfg = dict(type='SyncBN', requires_grad=True)\n"
            "model = dict(type='EncoderDecoder', backbone=dict(norm_cfg=norm_cfg, strides=(1, 2, 1, 1)),\n"
            "             decode_head=dict(align_corners=False, **dict(num_classes=19)))\n"
            "hook = lambda x: x\nscale = -1\n")
    config = parse_config_text(text)
    assert config["model"]["backbone"] == {"norm_cfg": {"type": "SyncBN", "requires_grad": True},
                                           "strides": (1, 2, 1, 1)}
    assert config["model"]["decode_head"] == {"align_corners": False, "num_classes": 19}
    assert "hook" not in config and config["scale"] == -1 and "os" not in config


@pytest.mark.parametrize("change, says", [
    (dict(head="ASPPHead"), "its decode head is ASPPHead"),
    (dict(backbone="ResNeSt"), "its backbone is ResNeSt"),
    (dict(strides=(1, 2, 2, 2)), "output stride 32"),
])
def test_a_config_the_family_cannot_express_is_one_error(tmp_path, r18, change, says):
    _, ref, _ = r18
    path = write_0x(tmp_path / "other.pth", R.model_dict(18, 19, **change), ref)
    with pytest.raises(CheckpointError, match=says) as err:
        load_model(path)
    assert "\n" not in str(err.value) and "cannot express" in str(err.value)


def test_weights_of_another_head_are_one_error_naming_it(tmp_path, r18):
    _, ref, _ = r18
    state = {k.replace("decode_head.bottleneck", "decode_head.aspp_bottleneck"): v for k, v in ref.state_dict().items()}
    path = tmp_path / "aspp.pth"
    torch.save({"meta": {}, "state_dict": state}, path)
    with pytest.raises(CheckpointError, match="has no decode_head.bottleneck.conv.weight"):
        load_model(path)
    torch.save({"meta": {}, "state_dict": {**ref.state_dict(), "decode_head.image_pool.1.conv.weight":
                                           torch.zeros(1)}}, path)
    with pytest.raises(CheckpointError, match="modules a PSPNet .* does not: decode_head.image_pool.1"):
        load_model(path)


def test_psp_export_refuses_an_unsupported_checkpoint_in_one_line(tmp_path, r18):
    from export.cli import main

    _, ref, _ = r18
    path = write_0x(tmp_path / "fcn.pth", R.model_dict(18, 19, head="FCNHead"), ref)
    result = CliRunner().invoke(main, ["onnx", str(path), "-o", str(tmp_path / "fcn.onnx")])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]  # after the progress bar
    assert result.exit_code == 2 and len(errors) == 1 and "Traceback" not in result.output, result.output
    assert "its decode head is FCNHead" in errors[0] and sorted(p.name for p in tmp_path.iterdir()) == ["fcn.pth"]


class _Payload:
    """Stands for an arbitrary object in a checkpoint: unpickling it would run code."""

    ran = False

    def __reduce__(self):
        return (_run_payload, ())


def _run_payload():
    _Payload.ran = True


def test_meta_with_numpy_values_loads_and_arbitrary_objects_are_refused(tmp_path, r18):
    _, ref, _ = r18
    numpy_meta = tmp_path / "numpy.pth"
    hook_msgs = {"best_score": np.float64(0.7855), "scores": np.arange(3, dtype=np.float32)}
    torch.save({"meta": {"hook_msgs": hook_msgs}, "state_dict": ref.state_dict()}, numpy_meta)
    assert read_checkpoint(numpy_meta)["meta"]["hook_msgs"]["best_score"] == pytest.approx(0.7855)
    # A file written under numpy 1 names numpy.core.multiarray (legacy format: the pickle stream is plain bytes).
    legacy = tmp_path / "numpy1.pth"
    torch.save({"meta": {"best": np.float64(0.5)}, "state_dict": {}}, legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    assert b"numpy._core.multiarray\nscalar" in data
    legacy.write_bytes(data.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"))
    assert read_checkpoint(legacy)["meta"]["best"] == 0.5
    hostile = tmp_path / "object.pth"
    torch.save({"meta": {"env": _Payload()}, "state_dict": ref.state_dict()}, hostile)
    with pytest.raises(CheckpointError, match=r"stores a tests\.pspnet\.test_mmseg\._run_payload object") as err:
        load_model(hostile)
    assert not _Payload.ran and "\n" not in str(err.value)
    assert pickle.loads(pickle.dumps(_Payload())) is None and _Payload.ran  # the payload is real


@pytest.fixture(scope="module")
def exported(tmp_path_factory, r18):
    """The mmseg checkpoint through export_checkpoint with no architecture options: static and dynamic shape."""
    from export.onnx.exporter import export_checkpoint

    _, _, path = r18
    folder = tmp_path_factory.mktemp("onnx")
    static = export_checkpoint(path, folder / "static.onnx", size=(71, 93))
    dynamic = export_checkpoint(path, folder / "dynamic.onnx", size=(65, 65), dynamic_shape=True)
    return static, dynamic


def test_export_is_exact_at_sizes_the_bins_do_not_divide(r18, exported):
    import onnx
    import onnxruntime as ort

    _, ref, _ = r18
    static, dynamic = exported
    assert static.parity is not None and dynamic.parity is not None  # export's own check against PyTorch
    for result, sizes in ((static, [(71, 93)]), (dynamic, [(65, 65), (71, 93), (97, 57)])):
        session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])  # one per file
        for size in sizes:
            x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(size[0]))
            with torch.no_grad():
                expected = ref(x).numpy()
            got = session.run(None, {"image": x.numpy()})[0]
            assert rel_error(expected, got) <= 1e-4 and agreement(expected, got) >= 0.9999, (result.path, size)
    modes = {a.s.decode() for n in onnx.load(static.path).graph.node if n.op_type == "Resize"
             for a in n.attribute if a.name == "coordinate_transformation_mode"}
    assert modes == {"half_pixel"}  # align_corners=False, as mmseg


def test_exported_model_carries_the_checkpoint_classes(exported):
    from pspcore.model_info import read_onnx_info

    info = read_onnx_info(exported[1].path)
    assert info.arch == "mmseg-r18-d8" and info.class_names == CITYSCAPES_NAMES and info.dynamic_shape
    assert info.palette == CITYSCAPES_PALETTE and info.extra["source"].startswith("mmsegmentation")


def test_psp_eval_and_torch_runner_run_the_checkpoint_directly(tmp_path, r18):
    import cv2

    from pspcore.registry import create_runner
    from pspnet.eval_cli import main as eval_main

    _, ref, path = r18
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "a.png"), rng.integers(0, 255, (65, 81, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "a_label.png"), rng.integers(0, 19, (65, 81), np.uint8))
    (tmp_path / "val.txt").write_text("a.png a_label.png\n")
    result = CliRunner().invoke(eval_main, [str(path), "--dataset", str(tmp_path / "val.txt"), "--json", "-"])
    assert result.exit_code == 0, result.output
    assert '"name": "sidewalk"' in result.output
    with create_runner("torch", str(path)) as runner:
        x = np.random.default_rng(1).standard_normal((1, 3, 65, 81)).astype(np.float32)
        with torch.no_grad():
            expected = ref(torch.from_numpy(x)).numpy()
        assert rel_error(expected, runner.infer(x)) <= 1e-4 and runner.info.class_names == CITYSCAPES_NAMES


@pytest.mark.slow
def test_pspnet50_d8_checkpoint(tmp_path):
    model, ref = reference(depth=50, seed=3)
    net, info = load_model(write_0x(tmp_path / "r50.pth", model, ref))
    assert net.config.arch == "mmseg-r50-d8" and net.config.head_channels == 512 and net.config.ppm_channels == 512
    assert_same_logits(ref, net, sizes=((71, 93),))


# ---- mmseg 1.x files with config text (meta["cfg"]): the same settings as 0.x files, read from there ----

def test_1x_config_text_decides_align_corners_dilations_and_crop(tmp_path):
    model, ref = reference(align_corners=True, dilations=(1, 1, 1, 2), contract_dilation=False, seed=4)
    model["data_preprocessor"] = dict(type="SegDataPreProcessor", mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0],
                                      bgr_to_rgb=True, size=(769, 769))  # 1.x: the crop lives here
    path = tmp_path / "769-1x.pth"
    R.mmseg_checkpoint(path, ref, meta_format="1.x", config=R.config_text(model), **CITYSCAPES)
    net, info = load_model(path)
    assert net.config.align_corners and net.config.dilations == (1, 1, 1, 2) and not net.config.contract_dilation
    assert info.input_size == (769, 769) and info.mean == (1.0, 2.0, 3.0) and info.std == (4.0, 5.0, 6.0)
    assert info.class_names == CITYSCAPES_NAMES
    assert_same_logits(ref, net)


def test_1x_crop_size_variable_wins_over_the_preprocessor_size(tmp_path):
    model, ref = reference(seed=5)
    model["data_preprocessor"] = dict(type="SegDataPreProcessor", size=(512, 512))
    path = tmp_path / "crop-1x.pth"
    R.mmseg_checkpoint(path, ref, meta_format="1.x", config=R.config_text(model, crop_size=(512, 1024)),
                       **CITYSCAPES)
    assert load_model(path)[1].input_size == (512, 1024)


def test_keys_missing_from_the_config_text_take_mmsegs_class_defaults(tmp_path):
    """What mmseg itself builds from a config without dilations, contract_dilation or align_corners: its
    classes' defaults (ResNet dilations 1,1,1,1 and contract_dilation False; heads align_corners False). The
    reference is built with those values written out, the file's config text leaves them out."""
    model, ref = reference(dilations=(1, 1, 1, 1), contract_dilation=False, align_corners=False, seed=6)
    written = {**model, "backbone": {k: v for k, v in model["backbone"].items()
                                     if k not in ("dilations", "contract_dilation")},
               "decode_head": {k: v for k, v in model["decode_head"].items() if k != "align_corners"},
               "auxiliary_head": {k: v for k, v in model["auxiliary_head"].items() if k != "align_corners"}}
    path = tmp_path / "defaults-1x.pth"
    R.mmseg_checkpoint(path, ref, meta_format="1.x", config=R.config_text(written), **CITYSCAPES)
    net, _ = load_model(path)
    assert net.config.dilations == (1, 1, 1, 1) and not net.config.contract_dilation
    assert not net.config.align_corners
    assert_same_logits(ref, net)


def test_a_config_without_strides_takes_resnets_default_and_is_refused_as_output_stride_32(tmp_path):
    model, ref = reference(seed=7)
    written = {**model, "backbone": {k: v for k, v in model["backbone"].items() if k != "strides"}}
    path = tmp_path / "no-strides-1x.pth"
    R.mmseg_checkpoint(path, ref, meta_format="1.x", config=R.config_text(written), **CITYSCAPES)
    with pytest.raises(CheckpointError, match="output stride 32"):
        load_model(path)
