import pytest
import torch

from pspcore.errors import InputError
from pspnet import PSPNetLoss, create_model


def test_pspnet50_layout_matches_reference_counts():
    model = create_model("pspnet50", num_classes=150)
    keys = model.state_dict().keys()
    assert len(keys) == 370
    n_all = sum(p.numel() for p in model.parameters())
    n_deploy = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("aux."))
    assert abs(n_all / 1e6 - 49.2) < 0.05 and abs(n_deploy / 1e6 - 46.8) < 0.05
    assert model.state_dict()["ppm.features.0.1.weight"].shape == (512, 2048, 1, 1)
    assert model.state_dict()["layer1.0.conv1.weight"].shape == (64, 128, 1, 1)  # deep stem: 128 in
    for name in ("layer0.0.weight", "layer0.4.running_var", "layer4.0.downsample.1.num_batches_tracked",
                 "cls.4.bias", "aux.0.weight", "ppm.features.3.2.running_mean"):
        assert name in keys


def test_pspnet18_tiny_is_pspnet18_at_half_width():
    """The same keys as pspnet18 (so everything that reads a checkpoint treats it alike), half the channels."""
    full, tiny = create_model("pspnet18", num_classes=5).state_dict(), create_model("pspnet18-tiny", 5).state_dict()
    assert list(tiny) == list(full)
    assert tiny["layer0.0.weight"].shape == (32, 3, 3, 3) and full["layer0.0.weight"].shape == (64, 3, 3, 3)
    assert tiny["layer4.1.conv2.weight"].shape == (256, 256, 3, 3)
    assert tiny["ppm.features.0.1.weight"].shape == (64, 256, 1, 1) and tiny["cls.0.weight"].shape[:2] == (128, 512)
    ratio = sum(t.numel() for t in tiny.values()) / sum(t.numel() for t in full.values())
    assert 0.2 < ratio < 0.3


def test_dilation_and_output_stride_8():
    model = create_model("pspnet50", num_classes=3)
    assert model.layer3[0].conv2.dilation == (2, 2) and model.layer3[0].conv2.stride == (1, 1)
    assert model.layer4[2].conv2.dilation == (4, 4) and model.layer4[2].conv2.padding == (4, 4)
    assert model.layer3[0].downsample[0].stride == (1, 1)
    x = torch.randn(1, 3, 65, 65)
    feats = model.layer4(model.layer3(model.layer2(model.layer1(model.layer0(x)))))
    assert feats.shape[-2:] == (9, 9)  # (65 - 1) / 8 + 1


@pytest.mark.parametrize("size", [(65, 65), (97, 97), (64, 128), (47, 63), (75, 100)])
def test_eval_output_at_input_resolution(size):
    model = create_model("pspnet18", num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 5, *size)


@pytest.mark.parametrize("size", [(512, 1024), (375, 500)])
def test_pspnet50_large_sizes(size):
    """PSPNet-50 at Cityscapes' and VOC's sizes, where the pyramid bins do not divide the feature map: the same
    forward on the meta device (shapes only, no arithmetic), so the real sizes cost no compute here; the small
    sizes above run the arithmetic."""
    with torch.device("meta"):
        model = create_model("pspnet50", num_classes=19, aux=False).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, *size)).shape == (1, 19, *size)


def test_aux_only_in_training_and_loss_weight():
    torch.manual_seed(0)
    model = create_model("pspnet18", num_classes=4)
    x, y = torch.randn(2, 3, 65, 65), torch.randint(0, 4, (2, 65, 65))
    y[0, :5] = 255
    model.train()
    main, aux = model(x)
    assert main.shape == aux.shape == (2, 4, 65, 65)
    ce = torch.nn.CrossEntropyLoss(ignore_index=255)
    loss = PSPNetLoss()((main, aux), y)
    assert torch.allclose(loss, ce(main, y) + 0.4 * ce(aux, y))
    model.eval()
    assert isinstance(model(x), torch.Tensor)


def test_no_ppm_baseline_and_options():
    fcn = create_model("pspnet18", num_classes=4, use_ppm=False, aux=False)
    assert not hasattr(fcn, "ppm") and not hasattr(fcn, "aux")
    assert fcn.cls[0].in_channels == 512
    psp = create_model("pspnet18", num_classes=4, bins=(1, 2, 4))
    assert len(psp.ppm.features) == 3 and psp.cls[0].in_channels == 512 + 3 * 170


def test_bad_factory_arguments():
    with pytest.raises(InputError, match="unknown architecture"):
        create_model("pspnet99", num_classes=3)
    with pytest.raises(InputError, match="num_classes"):
        create_model("pspnet18", num_classes=0)
