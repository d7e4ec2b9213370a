"""Dilated ResNet backbones with the reference 'deep stem' (hszhao/semseg layout, output stride 8).

Parameter names match semseg's: `layer0.{0..9}` for the stem, `layer{1..4}.{i}.conv{1,2,3}/bn{1,2,3}`,
`layer{1..4}.0.downsample.{0,1}`, so published checkpoints load key for key."""
from __future__ import annotations

from torch import nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
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

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # Stride and dilation sit on the 3x3 conv, as in semseg (ResNet "v1.5").
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


def deep_stem() -> nn.Sequential:
    """conv3x3(3->64, s2) BN ReLU, conv3x3(64->64) BN ReLU, conv3x3(64->128) BN ReLU, maxpool 3x3 s2."""
    return nn.Sequential(
        conv3x3(3, 64, stride=2), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        conv3x3(64, 64), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        conv3x3(64, 128), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


def make_layer(block, inplanes: int, planes: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
        )
    layers = [block(inplanes, planes, stride, dilation, downsample)]
    layers += [block(planes * block.expansion, planes, 1, dilation) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def dilated_resnet(block_name: str, depths: tuple[int, int, int, int]) -> dict[str, nn.Module]:
    """layer0..layer4 of a ResNet with layer3/4 dilated (2, 4) instead of strided: output stride 8."""
    block = BLOCKS[block_name]
    inplanes = 128  # the deep stem ends at 128 channels
    layers = {"layer0": deep_stem()}
    plan = [(64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4)]  # (planes, stride, dilation)
    for i, ((planes, stride, dilation), depth) in enumerate(zip(plan, depths), start=1):
        layers[f"layer{i}"] = make_layer(block, inplanes, planes, depth, stride, dilation)
        inplanes = planes * block.expansion
    return layers
