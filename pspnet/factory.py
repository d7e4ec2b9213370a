"""Named PSPNet variants and the one factory that builds them (`create_model("pspnet50", num_classes=150)`)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from pspcore.errors import InputError
from pspnet.pspnet import PSPNet, PSPNetConfig


@dataclass(frozen=True)
class Variant:
    block: str
    depths: tuple[int, int, int, int]
    head_channels: int
    aux_channels: int
    input_size: tuple[int, int]
    layout: dict = field(default_factory=dict)  # PSPNetConfig layout fields that differ from semseg's


# 50/101/152 are the paper's networks. 18/34 use basic blocks and a narrower head (a project choice) for
# fast CPU training and tests; no published checkpoint exists for them. pspnet18-tiny is pspnet18 at half
# width (layer1..4 32-256 wide, a 32-32-64 stem, head 128): the same keys, a quarter of the weights and compute,
# for tests and quick demos.
VARIANTS: dict[str, Variant] = {
    "pspnet18": Variant("basic", (2, 2, 2, 2), 256, 128, (129, 129)),
    "pspnet18-tiny": Variant("basic", (2, 2, 2, 2), 128, 64, (129, 129), {"base_width": 32, "stem_channels": 64}),
    "pspnet34": Variant("basic", (3, 4, 6, 3), 256, 128, (257, 257)),
    "pspnet50": Variant("bottleneck", (3, 4, 6, 3), 512, 256, (473, 473)),
    "pspnet101": Variant("bottleneck", (3, 4, 23, 3), 512, 256, (473, 473)),
    "pspnet152": Variant("bottleneck", (3, 8, 36, 3), 512, 256, (473, 473)),
}


def _register_mmseg_variants() -> None:
    """mmsegmentation's PSPNets, named after its configs: mmseg-r50-d8 (ResNetV1c, deep stem 32-32-64) and
    mmseg-r50b-d8 (ResNet, 7x7 stem). The head is 512 wide (PPM and bottleneck alike), aux 256; mmseg's
    ResNet-18 configs use 128 and 64. The d8 configs' strides and dilations, with contract_dilation."""
    for depth, semseg_name in ((18, "pspnet18"), (34, "pspnet34"), (50, "pspnet50"), (101, "pspnet101"),
                               (152, "pspnet152")):
        base = VARIANTS[semseg_name]
        head, aux = (128, 64) if base.block == "basic" else (512, 256)
        v1c = {"stem_channels": 64, "contract_dilation": True, "dilate_basic_conv2": False, "ppm_channels": head,
               "align_corners": False}
        for suffix, stem in (("", {"stem": "deep"}), ("b", {"stem": "plain"})):
            VARIANTS[f"mmseg-r{depth}{suffix}-d8"] = Variant(base.block, base.depths, head, aux, (512, 512),
                                                             {**v1c, **stem})


_register_mmseg_variants()


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
                        dropout=dropout, use_ppm=use_ppm, aux=aux, **v.layout)


def create_model(arch: str, num_classes: int, **options) -> PSPNet:
    """A PSPNet by name: pspnet18/34/50/101/152, pspnet18-tiny, mmseg-r{18,34,50,101,152}[b]-d8. Options: bins,
    aux, dropout, use_ppm."""
    return PSPNet(model_config(arch, num_classes, **options))


_TUPLE_FIELDS = ("depths", "bins", "strides", "dilations")


def create_from_config(config: PSPNetConfig | dict, **overrides) -> PSPNet:
    if isinstance(config, dict):  # as stored in checkpoints (JSON-like: lists for tuples)
        config = PSPNetConfig(**{**config, **{k: tuple(config[k]) for k in _TUPLE_FIELDS if k in config}})
    return PSPNet(replace(config, **overrides))
