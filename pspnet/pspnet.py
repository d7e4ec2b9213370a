"""PSPNet (Zhao et al., CVPR 2017) in the layout of the authors' reference code: `layer0..layer4`, `ppm`,
`cls` and the training-only `aux` head, so published semseg checkpoints load key for key. The config's layout
fields also express mmsegmentation's PSPNet (its checkpoints are renamed into this layout by pspnet/mmseg.py)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pspnet.ppm import PPM
from pspnet.resnet import dilated_resnet


@dataclass(frozen=True)
class PSPNetConfig:
    """Everything that shapes the network; stored in checkpoints so a model can be rebuilt from one."""

    arch: str
    num_classes: int
    block: str
    depths: tuple[int, int, int, int]
    head_channels: int = 512
    aux_channels: int = 256
    bins: tuple[int, ...] = (1, 2, 3, 6)
    dropout: float = 0.1
    use_ppm: bool = True
    aux: bool = True
    # Layout: the defaults are semseg's; mmseg's ResNetV1c PSPNet is stem_channels=64, contract_dilation,
    # dilate_basic_conv2=False, ppm_channels=head_channels and align_corners=False (pspnet/factory.py).
    stem: str = "deep"  # "deep" (three 3x3 convs) or "plain" (one 7x7 conv)
    stem_channels: int = 128
    strides: tuple[int, int, int, int] = (1, 2, 1, 1)
    dilations: tuple[int, int, int, int] = (1, 1, 2, 4)
    contract_dilation: bool = False
    dilate_basic_conv2: bool = True
    ppm_channels: int | None = None  # None: feature_dim / len(bins), the paper's reduction
    align_corners: bool = True
    base_width: int = 64  # layer1's planes (ResNet's 64), doubled by each later stage; 32 in pspnet18-tiny

    @property
    def feature_dim(self) -> int:
        return 8 * self.base_width * (4 if self.block == "bottleneck" else 1)

    @property
    def reduction_dim(self) -> int:
        return self.ppm_channels or self.feature_dim // len(self.bins)


def _head(in_ch: int, mid_ch: int, num_classes: int, dropout: float) -> nn.Sequential:
    # Indices 0, 1, 4 are checkpoint keys (cls.{0,1,4}, aux.{0,1,4}).
    return nn.Sequential(
        nn.Conv2d(in_ch, mid_ch, 3, padding=1, bias=False),
        nn.BatchNorm2d(mid_ch),
        nn.ReLU(inplace=True),
        nn.Dropout2d(p=dropout),
        nn.Conv2d(mid_ch, num_classes, 1),
    )


class PSPNet(nn.Module):
    """Eval mode: `model(x)` -> logits [N, C, H, W] at the input resolution.
    Training mode with the aux head: `(main_logits, aux_logits)`, both at the input resolution."""

    def __init__(self, config: PSPNetConfig):
        super().__init__()
        self.config = config
        backbone = dilated_resnet(config.block, config.depths, stem=config.stem, stem_channels=config.stem_channels,
                                  strides=config.strides, dilations=config.dilations,
                                  contract_dilation=config.contract_dilation,
                                  dilate_basic_conv2=config.dilate_basic_conv2, base_width=config.base_width)
        for name, module in backbone.items():
            self.add_module(name, module)
        fea_dim = config.feature_dim
        if config.use_ppm:
            reduction = config.reduction_dim  # 2048 / 4 = 512 in the paper
            self.ppm = PPM(fea_dim, reduction, config.bins, config.align_corners)
            fea_dim += reduction * len(config.bins)
        self.cls = _head(fea_dim, config.head_channels, config.num_classes, config.dropout)
        if config.aux:
            self.aux = _head(config.feature_dim // 2, config.aux_channels, config.num_classes, config.dropout)

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        x = self.layer2(self.layer1(self.layer0(x)))
        x3 = self.layer3(x)
        x = self.layer4(x3)
        if self.config.use_ppm:
            x = self.ppm(x)
        align = self.config.align_corners
        out = F.interpolate(self.cls(x), size, mode="bilinear", align_corners=align)
        if self.training and self.config.aux:
            aux = F.interpolate(self.aux(x3), size, mode="bilinear", align_corners=align)
            return out, aux
        return out


class PSPNetLoss(nn.Module):
    """Cross-entropy on the main output plus `aux_weight` x the same on the aux output (paper: 0.4)."""

    def __init__(self, aux_weight: float = 0.4, ignore_index: int = 255):
        super().__init__()
        self.aux_weight = aux_weight
        self.ce = nn.CrossEntropyLoss(ignore_index=ignore_index)

    def forward(self, outputs, target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, (tuple, list)):
            main, aux = outputs
            return self.ce(main, target) + self.aux_weight * self.ce(aux, target)
        return self.ce(outputs, target)
