import pytest
import torch

from pspcore.errors import CheckpointError
from pspcore.model_info import ModelInfo
from pspnet import create_model, load_checkpoint, load_model, save_checkpoint
from pspnet.checkpoint import infer_config
from tests.pspnet.semseg_reference import SemsegPSPNet


def _randomise_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.fixture(scope="module")
def semseg_checkpoint(tmp_path_factory):
    """A checkpoint in the exact layout hszhao/semseg writes: {'epoch', 'state_dict', 'optimizer'} with
    DataParallel's `module.` prefix, from an independent re-creation of its model."""
    torch.manual_seed(0)
    ref = SemsegPSPNet(classes=150).eval()
    _randomise_bn(ref)
    path = tmp_path_factory.mktemp("ckpt") / "train_epoch_100.pth"
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    torch.save({"epoch": 100, "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    return ref, path


def test_semseg_checkpoint_loads_strictly_and_gives_same_logits(semseg_checkpoint):
    ref, path = semseg_checkpoint
    raw = torch.load(path, weights_only=True)["state_dict"]
    assert len(raw) == 370 and all(k.startswith("module.") for k in raw)
    model = create_model("pspnet50", num_classes=150).eval()
    assert load_checkpoint(model, path) is None  # semseg files carry no metadata
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def _same_weights(model, ref) -> None:
    ours, theirs = model.state_dict(), ref.state_dict()
    assert set(ours) <= set(theirs)
    for key, value in ours.items():
        torch.testing.assert_close(value, theirs[key], rtol=0, atol=0, msg=key)


def test_semseg_checkpoint_architecture_is_read_off_the_weights(semseg_checkpoint):
    ref, path = semseg_checkpoint
    model, info = load_model(path)
    assert model.config.arch == "pspnet50" and model.config.num_classes == 150 and model.config.aux
    assert info.dataset == "ade20k" and info.class_names[0] == "wall" and len(info.palette) == 150
    _same_weights(model, ref)  # every tensor, aux head included, is the checkpoint's


def test_deploy_model_without_aux_drops_aux_keys(semseg_checkpoint):
    ref, path = semseg_checkpoint
    model = create_model("pspnet50", num_classes=150, aux=False).eval()
    load_checkpoint(model, path)
    assert not any(k.startswith("aux.") for k in model.state_dict())
    _same_weights(model, ref)
    x = torch.randn(1, 3, 41, 49)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_class_count_mismatch_is_one_clear_error(semseg_checkpoint):
    _, path = semseg_checkpoint
    with pytest.raises(CheckpointError, match=r"train_epoch_100.pth: checkpoint has 150 classes, the model has 19"):
        load_checkpoint(create_model("pspnet50", num_classes=19), path)


def test_other_architecture_names_keys_and_guess(semseg_checkpoint):
    _, path = semseg_checkpoint
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(create_model("pspnet101", num_classes=150), path)
    msg = str(err.value)
    assert "does not fit pspnet101" in msg and "looks like pspnet50" in msg and "missing keys: layer3.6" in msg


def test_unknown_keys_are_listed(tmp_path):
    model = create_model("pspnet18", num_classes=3)
    state = model.state_dict()
    state["head.extra.weight"] = torch.zeros(1)
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="unexpected keys: head.extra.weight"):
        load_checkpoint(create_model("pspnet18", num_classes=3), path)


def test_missing_and_truncated_files(tmp_path):
    model = create_model("pspnet18", num_classes=3)
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pth"):
        load_checkpoint(model, tmp_path / "nope.pth")
    good = tmp_path / "good.pth"
    torch.save(model.state_dict(), good)
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth: not a readable PyTorch checkpoint"):
        load_checkpoint(model, bad)
    with pytest.raises(CheckpointError, match="no model state_dict"):
        torch.save({"epoch": 3}, tmp_path / "empty.pth")
        load_checkpoint(model, tmp_path / "empty.pth")


def test_own_format_round_trip_keeps_metadata(tmp_path):
    torch.manual_seed(1)
    model = create_model("pspnet18", num_classes=3, bins=(1, 2, 4)).eval()
    info = ModelInfo(arch="pspnet18", num_classes=3, class_names=("a", "b", "c"),
                     palette=((1, 2, 3), (4, 5, 6), (7, 8, 9)), input_size=(65, 65), dataset="toy")
    path = save_checkpoint(tmp_path / "own.pth", model, info, epoch=2, iteration=10)
    loaded, loaded_info = load_model(path)
    assert loaded_info == info and loaded.config == model.config
    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert not list(tmp_path.glob(".*partial"))


def test_a_bare_state_dict_of_either_width_is_told_apart(tmp_path):
    """pspnet18 and pspnet18-tiny share their keys: the weights' width says which one a bare state is."""
    for arch in ("pspnet18", "pspnet18-tiny"):
        assert infer_config(create_model(arch, num_classes=4).state_dict()).arch == arch
    path = tmp_path / "tiny.pth"
    torch.save(create_model("pspnet18-tiny", num_classes=3).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit pspnet18 .it looks like pspnet18-tiny.; shape mismatches"):
        load_checkpoint(create_model("pspnet18", num_classes=3), path)


def test_infer_config_for_basic_blocks():
    state = create_model("pspnet34", num_classes=7, aux=False).state_dict()
    cfg = infer_config(state)
    assert (cfg.arch, cfg.num_classes, cfg.aux, cfg.use_ppm) == ("pspnet34", 7, False, True)
