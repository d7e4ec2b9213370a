"""Dilated ResNet backbones in two layouts: hszhao/semseg's (deep stem 64-64-128, every block of a dilated stage
at the full dilation) and mmsegmentation's ResNetV1c/ResNet (deep stem 32-32-64 or the plain 7x7 stem,
`contract_dilation`, basic blocks dilating conv1 only).

Parameter names match semseg's: `layer0.{0..9}` for the stem, `layer{1..4}.{i}.conv{1,2,3}/bn{1,2,3}`,
`layer{1..4}.0.downsample.{0,1}`, so published checkpoints load key for key (mmseg's are renamed on loading,
see pspnet/mmseg.py)."""
from __future__ import annotations

from torch import nn

STEMS = ("deep", "plain")


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample=None,
                 dilate_conv2: bool = True):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        # mmseg's BasicBlock dilates conv1 only; ours (semseg style) dilates both.
        self.conv2 = conv3x3(planes, planes, 1, dilation if dilate_conv2 else 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample=None,
                 dilate_conv2: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # Stride and dilation sit on the 3x3 conv, as in semseg and mmseg's style='pytorch' (ResNet "v1.5");
        # that conv is always dilated, so `dilate_conv2` (a BasicBlock choice) changes nothing here.
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def deep_stem(channels: int = 128) -> nn.Sequential:
    """conv3x3(3->c/2, s2) BN ReLU, conv3x3(c/2->c/2) BN ReLU, conv3x3(c/2->c) BN ReLU, maxpool 3x3 s2:
    c = 128 in semseg (64-64-128), 64 in mmseg's ResNetV1c (32-32-64)."""
    half = channels // 2
    return nn.Sequential(
        conv3x3(3, half, stride=2), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
        conv3x3(half, half), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
        conv3x3(half, channels), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


def plain_stem(channels: int = 64) -> nn.Sequential:
    """The original ResNet stem: conv7x7(3->c, s2) BN ReLU, maxpool 3x3 s2 (mmseg's r18b/r50b/r101b)."""
    return nn.Sequential(
        nn.Conv2d(3, channels, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


def make_layer(block, inplanes: int, planes: int, blocks: int, stride: int, dilation: int,
               first_dilation: int | None = None, dilate_conv2: bool = True) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
        )
    first = dilation if first_dilation is None else first_dilation
    layers = [block(inplanes, planes, stride, first, downsample, dilate_conv2)]
    layers += [block(planes * block.expansion, planes, 1, dilation, None, dilate_conv2) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def dilated_resnet(block_name: str, depths: tuple[int, int, int, int], *, stem: str = "deep",
                   stem_channels: int = 128, strides: tuple[int, ...] = (1, 2, 1, 1),
                   dilations: tuple[int, ...] = (1, 1, 2, 4), contract_dilation: bool = False,
                   dilate_basic_conv2: bool = True, base_width: int = 64) -> dict[str, nn.Module]:
    """layer0..layer4 of a ResNet; the defaults are semseg's: layer3/4 dilated (2, 4) instead of strided,
    output stride 8. `contract_dilation` gives the first block of a dilated stage half the dilation (mmseg)."""
    block = BLOCKS[block_name]
    layers = {"layer0": deep_stem(stem_channels) if stem == "deep" else plain_stem(stem_channels)}
    inplanes = stem_channels
    widths = (base_width, 2 * base_width, 4 * base_width, 8 * base_width)  # ResNet's 64-128-256-512
    for i, (planes, depth, stride, dilation) in enumerate(zip(widths, depths, strides, dilations), start=1):
        first = dilation // 2 if contract_dilation and dilation > 1 else dilation
        layers[f"layer{i}"] = make_layer(block, inplanes, planes, depth, stride, dilation, first, dilate_basic_conv2)
        inplanes = planes * block.expansion
    return layers
