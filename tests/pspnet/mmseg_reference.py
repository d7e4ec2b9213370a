"""An independent re-creation of mmsegmentation's PSPNet (mmseg 1.2.2: backbones/resnet.py ResNet/ResNetV1c,
utils/res_layer.py ResLayer, decode_heads/psp_head.py PSPHead, fcn_head.py FCNHead, EncoderDecoder.encode_decode),
for tests only. Module names follow mmseg's, so `state_dict()` has its checkpoint keys (backbone.stem.*,
decode_head.psp_modules.*, auxiliary_head.convs.*); `mmseg_checkpoint` writes files in its 0.x and 1.x formats.
Our model is built in pspnet/'s own layout; the tests check both give the same logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvModule(nn.Module):
    """mmcv's ConvModule with a BN norm and ReLU: conv (no bias) -> bn -> activate."""

    def __init__(self, in_ch, out_ch, kernel, padding=0, dilation=1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.activate(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)  # mmseg: never dilated
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, dilation=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)  # style='pytorch': conv1 stride 1
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


def res_layer(block, inplanes, planes, num_blocks, stride, dilation, contract_dilation):
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(planes * block.expansion))
    first_dilation = dilation // 2 if dilation > 1 and contract_dilation else dilation
    layers = [block(inplanes, planes, stride, first_dilation, downsample)]
    layers += [block(planes * block.expansion, planes, 1, dilation) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


ARCH_SETTINGS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
                 101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3))}


class ResNet(nn.Module):
    def __init__(self, depth, deep_stem, strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4), contract_dilation=True,
                 stem_channels=64, base_channels=64):
        super().__init__()
        self.deep_stem = deep_stem
        if deep_stem:  # ResNetV1c
            half = stem_channels // 2
            self.stem = nn.Sequential(
                nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(True),
                nn.Conv2d(half, half, 3, padding=1, bias=False), nn.BatchNorm2d(half), nn.ReLU(True),
                nn.Conv2d(half, stem_channels, 3, padding=1, bias=False), nn.BatchNorm2d(stem_channels),
                nn.ReLU(True))
        else:
            self.conv1 = nn.Conv2d(3, stem_channels, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(stem_channels)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        block, stages = ARCH_SETTINGS[depth]
        inplanes = stem_channels
        for i, num_blocks in enumerate(stages):
            planes = base_channels * 2 ** i
            setattr(self, f"layer{i + 1}", res_layer(block, inplanes, planes, num_blocks, strides[i], dilations[i],
                                                     contract_dilation))
            inplanes = planes * block.expansion

    def forward(self, x):
        x = self.stem(x) if self.deep_stem else self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            outs.append(x)
        return tuple(outs)


class PSPHead(nn.Module):
    def __init__(self, in_channels, channels, num_classes, pool_scales=(1, 2, 3, 6), align_corners=False,
                 in_index=3):
        super().__init__()
        self.in_index, self.align_corners = in_index, align_corners
        # BaseDecodeHead.__init__ makes conv_seg and dropout before the subclass adds its modules.
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.dropout = nn.Dropout2d(0.1)
        self.psp_modules = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(in_channels, channels, 1))
                                         for s in pool_scales)
        self.bottleneck = ConvModule(in_channels + len(pool_scales) * channels, channels, 3, padding=1)

    def forward(self, inputs):
        x = inputs[self.in_index]
        outs = [x] + [F.interpolate(m(x), x.shape[2:], mode="bilinear", align_corners=self.align_corners)
                      for m in self.psp_modules]
        return self.conv_seg(self.dropout(self.bottleneck(torch.cat(outs, 1))))


class FCNHead(nn.Module):
    """num_convs=1, concat_input=False, kernel 3: the auxiliary head of every PSPNet config."""

    def __init__(self, in_channels, channels, num_classes, in_index=2):
        super().__init__()
        self.in_index = in_index
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.dropout = nn.Dropout2d(0.1)
        self.convs = nn.Sequential(ConvModule(in_channels, channels, 3, padding=1))

    def forward(self, inputs):
        return self.conv_seg(self.dropout(self.convs(inputs[self.in_index])))


class EncoderDecoder(nn.Module):
    def __init__(self, backbone, decode_head, auxiliary_head=None):
        super().__init__()
        self.backbone, self.decode_head = backbone, decode_head
        if auxiliary_head is not None:
            self.auxiliary_head = auxiliary_head

    def encode_decode(self, x):
        """Logits at the input size, as mmseg's encode_decode + predict_by_feat (bilinear, the head's
        align_corners)."""
        out = self.decode_head(self.backbone(x))
        return F.interpolate(out, x.shape[2:], mode="bilinear", align_corners=self.decode_head.align_corners)

    forward = encode_decode


def model_dict(depth=18, num_classes=19, *, backbone="ResNetV1c", strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4),
               contract_dilation=True, align_corners=False, pool_scales=(1, 2, 3, 6), head="PSPHead",
               aux=True) -> dict:
    """The `model` dict of mmseg's configs/_base_/models/pspnet_r50-d8.py (+ the r18 override)."""
    wide = ARCH_SETTINGS[depth][0] is Bottleneck
    feat = 2048 if wide else 512
    norm_cfg = dict(type="SyncBN", requires_grad=True)
    model = dict(
        type="EncoderDecoder", pretrained=f"open-mmlab://resnet{depth}_v1c",
        backbone=dict(type=backbone, depth=depth, num_stages=4, out_indices=(0, 1, 2, 3), dilations=dilations,
                      strides=strides, norm_cfg=norm_cfg, norm_eval=False, style="pytorch",
                      contract_dilation=contract_dilation),
        decode_head=dict(type=head, in_channels=feat, in_index=3, channels=512 if wide else 128,
                         pool_scales=pool_scales, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg,
                         align_corners=align_corners,
                         loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
        train_cfg=dict(), test_cfg=dict(mode="whole"))
    if aux:
        model["auxiliary_head"] = dict(type="FCNHead", in_channels=feat // 2, in_index=2,
                                       channels=256 if wide else 64, num_convs=1, concat_input=False,
                                       dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg,
                                       align_corners=align_corners,
                                       loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=0.4))
    return model


def build(model: dict) -> EncoderDecoder:
    """The network a model dict describes (what mmseg's MODELS.build does for these types)."""
    bb, dh, ah = model["backbone"], model["decode_head"], model.get("auxiliary_head")
    backbone = ResNet(bb["depth"], bb["type"] == "ResNetV1c", tuple(bb["strides"]), tuple(bb["dilations"]),
                      bb.get("contract_dilation", False))
    head = PSPHead(dh["in_channels"], dh["channels"], dh["num_classes"], tuple(dh["pool_scales"]),
                   dh["align_corners"])
    aux = FCNHead(ah["in_channels"], ah["channels"], ah["num_classes"]) if ah else None
    return EncoderDecoder(backbone, head, aux)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BN statistics (so outputs are not flat), deterministic per seed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _python(value) -> str:
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{k}={_python(v)}" for k, v in value.items()) + ")"
    if isinstance(value, (list, tuple)):
        items = ", ".join(_python(v) for v in value)
        return f"[{items}]" if isinstance(value, list) else f"({items}{',' if len(value) == 1 else ''})"
    return repr(value)


def config_text(model: dict, **variables) -> str:
    """A config file's text as mmcv/mmengine store it in checkpoints: `name = dict(...)` lines of Python."""
    lines = [f"{name} = {_python(value)}" for name, value in {**variables, "model": model}.items()]
    return "\n".join(lines) + "\n"


def mmseg_checkpoint(path, model: EncoderDecoder, *, meta_format: str = "0.x", config: str | None = None,
                     classes=None, palette=None, **extra_meta) -> None:
    """Save as mmseg does: {'meta': ..., 'state_dict': ...}; 0.x meta has `config`, `CLASSES`, `PALETTE`, 1.x
    meta has `dataset_meta` (classes, palette) and the config text as `cfg`."""
    meta = dict(extra_meta)
    if meta_format == "0.x":
        meta.update(mmseg_version="0.30.0", config=config, CLASSES=classes, PALETTE=palette)
    else:
        meta.update(mmseg_version="1.2.2", dataset_meta=dict(classes=classes, palette=palette))
        if config is not None:
            meta["cfg"] = config
    meta = {k: v for k, v in meta.items() if v is not None}
    torch.save({"meta": meta, "state_dict": model.state_dict()}, path)
