"""Named PSPNet variants and the one factory that builds them (`create_model("pspnet50", num_classes=150)`)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from pspcore.errors import InputError
from pspnet.pspnet import PSPNet, PSPNetConfig


@dataclass(frozen=True)
class Variant:
    block: str
    depths: tuple[int, int, int, int]
    head_channels: int
    aux_channels: int
    input_size: tuple[int, int]


# 50/101/152 are the paper's networks. 18/34 use basic blocks and a narrower head (a project choice) for
# fast CPU training and tests; no published checkpoint exists for them.
VARIANTS: dict[str, Variant] = {
    "pspnet18": Variant("basic", (2, 2, 2, 2), 256, 128, (129, 129)),
    "pspnet34": Variant("basic", (3, 4, 6, 3), 256, 128, (257, 257)),
    "pspnet50": Variant("bottleneck", (3, 4, 6, 3), 512, 256, (473, 473)),
    "pspnet101": Variant("bottleneck", (3, 4, 23, 3), 512, 256, (473, 473)),
    "pspnet152": Variant("bottleneck", (3, 8, 36, 3), 512, 256, (473, 473)),
}


def model_config(arch: str, num_classes: int, *, bins=(1, 2, 3, 6), aux: bool = True, dropout: float = 0.1,
                 use_ppm: bool = True) -> PSPNetConfig:
    if arch not in VARIANTS:
        raise InputError(f"unknown architecture {arch!r}; choose one of {', '.join(VARIANTS)}")
    if num_classes < 1:
        raise InputError(f"num_classes must be at least 1, got {num_classes}")
    bins = tuple(int(b) for b in bins)
    if not bins or min(bins) < 1:
        raise InputError(f"pyramid bins must be positive integers, got {bins}")
    v = VARIANTS[arch]
    return PSPNetConfig(arch=arch, num_classes=num_classes, block=v.block, depths=v.depths,
                        head_channels=v.head_channels, aux_channels=v.aux_channels, bins=bins,
                        dropout=dropout, use_ppm=use_ppm, aux=aux)


def create_model(arch: str, num_classes: int, **options) -> PSPNet:
    """A PSPNet by name: pspnet18/34/50/101/152. Options: bins, aux, dropout, use_ppm."""
    return PSPNet(model_config(arch, num_classes, **options))


def create_from_config(config: PSPNetConfig | dict, **overrides) -> PSPNet:
    if isinstance(config, dict):
        config = PSPNetConfig(**{**config, "depths": tuple(config["depths"]), "bins": tuple(config["bins"])})
    return PSPNet(replace(config, **overrides))
