"""An independent re-creation of hszhao/semseg's PSPNet construction, for tests only: a standard strided
ResNet with deep stem, then patched in place for dilation exactly as semseg's PSPNet.__init__ does. Our
model builds the dilated layers directly; the test checks both give the same keys and the same logits."""
import torch
import torch.nn.functional as F
from torch import nn


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + residual)


def _layer(inplanes, planes, blocks, stride):
    down = None
    if stride != 1 or inplanes != planes * 4:
        down = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                             nn.BatchNorm2d(planes * 4))
    return nn.Sequential(_Bottleneck(inplanes, planes, stride, down),
                         *[_Bottleneck(planes * 4, planes) for _ in range(1, blocks)])


class SemsegPSPNet(nn.Module):
    def __init__(self, depths=(3, 4, 6, 3), classes=150, bins=(1, 2, 3, 6)):
        super().__init__()
        c = lambda i, o, s=1: nn.Conv2d(i, o, 3, stride=s, padding=1, bias=False)  # noqa: E731
        self.layer0 = nn.Sequential(c(3, 64, 2), nn.BatchNorm2d(64), nn.ReLU(True), c(64, 64), nn.BatchNorm2d(64),
                                    nn.ReLU(True), c(64, 128), nn.BatchNorm2d(128), nn.ReLU(True),
                                    nn.MaxPool2d(3, 2, 1))
        self.layer1 = _layer(128, 64, depths[0], 1)
        self.layer2 = _layer(256, 128, depths[1], 2)
        self.layer3 = _layer(512, 256, depths[2], 2)
        self.layer4 = _layer(1024, 512, depths[3], 2)
        for layer, d in ((self.layer3, 2), (self.layer4, 4)):
            for n, m in layer.named_modules():
                if "conv2" in n:
                    m.dilation, m.padding, m.stride = (d, d), (d, d), (1, 1)
                elif "downsample.0" in n:
                    m.stride = (1, 1)
        self.ppm = nn.Module()
        self.ppm.features = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(2048, 512, 1, bias=False), nn.BatchNorm2d(512),
                          nn.ReLU(True)) for b in bins)
        head = lambda i, m: nn.Sequential(nn.Conv2d(i, m, 3, padding=1, bias=False), nn.BatchNorm2d(m),  # noqa
                                          nn.ReLU(True), nn.Dropout2d(0.1), nn.Conv2d(m, classes, 1))
        self.cls = head(4096, 512)
        self.aux = head(1024, 256)

    def forward(self, x):
        h = int((x.shape[2] - 1) / 8 * 8 + 1)
        w = int((x.shape[3] - 1) / 8 * 8 + 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.layer0(x)))))
        size = x.shape[-2:]
        x = torch.cat([x] + [F.interpolate(f(x), size, mode="bilinear", align_corners=True)
                             for f in self.ppm.features], 1)
        return F.interpolate(self.cls(x), (h, w), mode="bilinear", align_corners=True)
