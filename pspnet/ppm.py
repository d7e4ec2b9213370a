"""The pyramid pooling module (PSPNet, Fig. 3): pool the feature map to b x b for each bin, reduce channels,
upsample back and concatenate with the input."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PPM(nn.Module):
    def __init__(self, in_dim: int, reduction_dim: int, bins: tuple[int, ...], align_corners: bool = True):
        super().__init__()
        self.bins = tuple(bins)
        # semseg upsamples with align_corners=True, mmseg's configs mostly with False: the weights do not say.
        self.align_corners = align_corners
        # Sequential indices are part of the checkpoint keys: ppm.features.{i}.1 = conv, .2 = BN.
        self.features = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(in_dim, reduction_dim, 1, bias=False),
                nn.BatchNorm2d(reduction_dim),
                nn.ReLU(inplace=True),
            )
            for b in self.bins
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pyramid = [F.interpolate(f(x), size, mode="bilinear", align_corners=self.align_corners)
                   for f in self.features]
        return torch.cat([x, *pyramid], 1)
