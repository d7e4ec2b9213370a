"""mmsegmentation PSPNet checkpoints: recognised by their keys, renamed into pspnet/'s layout, and described by
their meta (0.x: `config` text, `CLASSES`, `PALETTE`; 1.x: `dataset_meta`, `cfg` text). The stored config text
is read with `ast` (never executed); what it cannot tell is read off the weights, or assumed (mmseg's d8 configs)
with a notice. A model outside the family (another head, backbone or layout) is one CheckpointError naming it."""
from __future__ import annotations

import ast
import math
import os
import re
from dataclasses import dataclass, field, replace

import torch

from pspcore.errors import CheckpointError, notice_once
from pspcore.model_info import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, generic_palette
from pspnet.factory import VARIANTS, model_config
from pspnet.labels import LABEL_SETS, LabelSet, label_set_for
from pspnet.pspnet import PSPNetConfig

PREFIXES = ("backbone.", "decode_head.", "auxiliary_head.")

# mmseg key (regex) -> ours. ConvModule's conv/bn map to the Sequential indices of our PPM and heads.
KEY_RULES: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p), r) for p, r in (
    (r"^backbone\.stem\.([0-9]+)\.", r"layer0.\1."),  # ResNetV1c deep stem: convs 0,3,6, BNs 1,4,7
    (r"^backbone\.conv1\.", "layer0.0."),  # ResNet 7x7 stem
    (r"^backbone\.bn1\.", "layer0.1."),
    (r"^backbone\.(layer[1-4])\.", r"\1."),
    (r"^decode_head\.psp_modules\.([0-9]+)\.1\.conv\.", r"ppm.features.\1.1."),
    (r"^decode_head\.psp_modules\.([0-9]+)\.1\.bn\.", r"ppm.features.\1.2."),
    (r"^decode_head\.bottleneck\.conv\.", "cls.0."),
    (r"^decode_head\.bottleneck\.bn\.", "cls.1."),
    (r"^decode_head\.conv_seg\.", "cls.4."),
    (r"^auxiliary_head\.convs\.0\.conv\.", "aux.0."),
    (r"^auxiliary_head\.convs\.0\.bn\.", "aux.1."),
    (r"^auxiliary_head\.conv_seg\.", "aux.4."),
))
DEPTHS = {("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34, ("bottleneck", (3, 4, 6, 3)): 50,
          ("bottleneck", (3, 4, 23, 3)): 101, ("bottleneck", (3, 8, 36, 3)): 152}
# mmseg's dataset classes -> our label sets (names and official palettes), for files whose meta has no classes.
DATASET_TYPES = {"CityscapesDataset": "cityscapes", "ADE20KDataset": "ade20k", "PascalVOCDataset": "voc"}
D8 = {"strides": (1, 2, 1, 1), "dilations": (1, 1, 2, 4), "contract_dilation": True, "align_corners": False}
STEM_STRIDE = 4  # the stem's stride-2 conv and max pool


def is_mmseg_state(state: dict) -> bool:
    return any(k.startswith(PREFIXES) for k in state)


# ---- the config text ------------------------------------------------------------------------------------

class _NotLiteral(Exception):
    pass


def _literal(node: ast.AST, scope: dict):
    """The value of a config expression made of literals, `dict(k=v)` calls and names assigned before."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_literal(e, scope) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(k, scope): _literal(v, scope) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        out = {}
        for kw in node.keywords:
            value = _literal(kw.value, scope)
            if kw.arg is None and isinstance(value, dict):
                out.update(value)  # dict(**other)
            elif kw.arg is not None:
                out[kw.arg] = value
            else:
                raise _NotLiteral
        return out
    if isinstance(node, ast.Name) and node.id in scope:
        return scope[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _literal(node.operand, scope)
        if isinstance(value, (int, float)):
            return -value
    raise _NotLiteral


def parse_config_text(text: str) -> dict:
    """Top-level `name = value` assignments of an mmcv/mmengine config text whose values are literals (the
    others, e.g. lambdas or imports, are skipped). Nothing is executed. Raises SyntaxError for non-Python."""
    scope: dict = {}
    for stmt in ast.parse(text).body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                scope[stmt.targets[0].id] = _literal(stmt.value, scope)
            except _NotLiteral:
                continue
    return scope


# ---- the meta -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MmsegMeta:
    """What an mmseg checkpoint says besides its weights."""

    config: dict = field(default_factory=dict)  # parsed config text; empty when the file has none or unreadable
    classes: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    version: str = ""

    @property
    def model(self) -> dict:
        model = self.config.get("model")
        return model if isinstance(model, dict) else {}


def _names(value) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return ()


def _colours(value) -> tuple[tuple[int, int, int], ...]:
    try:
        palette = tuple(tuple(int(c) for c in colour) for colour in value)
    except (TypeError, ValueError):
        return ()
    return palette if all(len(c) == 3 for c in palette) else ()


def read_meta(obj: dict, path: str | os.PathLike) -> MmsegMeta:
    """Class names, palette and the parsed config text of a 0.x or 1.x checkpoint (any of them may be absent)."""
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    dataset_meta = meta.get("dataset_meta") if isinstance(meta.get("dataset_meta"), dict) else {}
    text = meta.get("config", meta.get("cfg"))  # 0.x: config, 1.x (mmengine's runner): cfg
    config = {}
    if isinstance(text, str) and text.strip():
        try:
            config = parse_config_text(text)
        except SyntaxError as exc:
            notice_once(f"{path}:config", f"{path}: the stored config text is not readable Python "
                        f"(line {exc.lineno}); the layout is read off the weights and mmseg's d8 defaults")
    classes = _names(meta.get("CLASSES")) or _names(dataset_meta.get("classes"))
    palette = _colours(meta.get("PALETTE") or dataset_meta.get("palette") or ())
    version = meta.get("mmseg_version", "")
    return MmsegMeta(config, classes, palette, version if isinstance(version, str) else "")


# ---- the weights ----------------------------------------------------------------------------------------

def rename_keys(state: dict[str, torch.Tensor], path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """mmseg's key names -> ours; a module this family does not have is a CheckpointError naming it."""
    renamed, unknown = {}, []
    for key, value in state.items():
        if key.startswith("data_preprocessor."):
            continue  # normalisation buffers; the mean/std travel in ModelInfo
        for pattern, replacement in KEY_RULES:
            new, hits = pattern.subn(replacement, key)
            if hits:
                renamed[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        modules = sorted({".".join(k.split(".")[:3]) for k in unknown})
        raise CheckpointError(f"{path}: mmseg checkpoint has modules a PSPNet (ResNet + PSPHead + FCNHead aux) "
                              f"does not: {', '.join(modules[:4])}{' ...' if len(modules) > 4 else ''}")
    return renamed


def _count(state: dict, prefix: str) -> int:
    idx = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def _channels(state: dict, key: str, path) -> int:
    if key not in state:
        raise CheckpointError(f"{path}: mmseg checkpoint has no {key}: not a PSPNet (PSPHead) checkpoint")
    return int(state[key].shape[0])


def _require(condition: bool, path, what: str) -> None:
    if not condition:
        raise CheckpointError(f"{path}: {what}, which pspnet-deploy's PSPNet cannot express "
                              "(it loads mmseg's EncoderDecoder with a ResNet/ResNetV1c backbone and a PSPHead)")


def _check_config(model: dict, path) -> None:
    """Refuse, by name, what the config asks for and the model family does not build."""
    backbone, head = model.get("backbone") or {}, model.get("decode_head") or {}
    _require(model.get("type", "EncoderDecoder") == "EncoderDecoder", path, f"its segmentor is {model.get('type')}")
    kind = backbone.get("type", "ResNetV1c")
    _require(kind in ("ResNetV1c", "ResNet"), path, f"its backbone is {kind}")
    _require(backbone.get("style", "pytorch") == "pytorch", path, f"its ResNet style is {backbone.get('style')!r}")
    _require(not backbone.get("avg_down"), path, "its backbone uses avg_down")
    for option in ("multi_grid", "dcn", "plugins"):
        _require(backbone.get(option) is None, path, f"its backbone sets {option}")
    _require(backbone.get("num_stages", 4) == 4, path, f"its backbone has {backbone.get('num_stages')} stages")
    _require(isinstance(head, dict) and head.get("type", "PSPHead") == "PSPHead", path,
             f"its decode head is {head.get('type') if isinstance(head, dict) else type(head).__name__}")
    _require(head.get("in_index", 3) in (3, -1) and head.get("input_transform") is None, path,
             "its decode head reads other backbone stages")
    for part, cfg in (("decode head", head), ("backbone", backbone)):
        act = (cfg.get("act_cfg") or {"type": "ReLU"}).get("type")
        norm = (cfg.get("norm_cfg") or {"type": "BN"}).get("type")
        _require(act == "ReLU", path, f"its {part} uses {act} activations")
        _require(norm in ("BN", "SyncBN"), path, f"its {part} uses {norm} normalisation")
    _require(head.get("conv_cfg") is None and backbone.get("conv_cfg") is None, path, "it sets conv_cfg")


def _aux_usable(model: dict, state: dict) -> bool:
    """True when the auxiliary head is the one FCNHead every PSPNet config has (one 3x3 conv, no concat)."""
    aux = model.get("auxiliary_head")
    if isinstance(aux, dict):
        standard = (aux.get("type") == "FCNHead" and aux.get("num_convs", 2) == 1
                    and not aux.get("concat_input", True) and aux.get("kernel_size", 3) == 3
                    and aux.get("dilation", 1) == 1 and aux.get("in_index") in (2, -2))
        if not standard:
            return False
    elif aux is not None:
        return False  # a list of auxiliary heads
    keys = {k for k in state if k.startswith("auxiliary_head.")}
    allowed = re.compile(r"^auxiliary_head\.(convs\.0\.(conv|bn)|conv_seg)\.")
    return bool(keys) and all(allowed.match(k) for k in keys)


def _layout(model: dict, path) -> dict:
    """strides, dilations, contract_dilation and align_corners from the config, else mmseg's d8 values."""
    if not model:
        notice_once(f"{path}:mmseg-d8", f"{path}: no model config in the checkpoint; assuming mmseg's d8 layout "
                    "(strides 1,2,1,1, dilations 1,1,2,4, contract_dilation, align_corners=False)")
        return dict(D8)
    backbone, head = model.get("backbone") or {}, model.get("decode_head") or {}
    # Defaults where a key is absent are mmseg's class defaults, as building the config would use them.
    layout = {"strides": tuple(backbone.get("strides", (1, 2, 2, 2))),
              "dilations": tuple(backbone.get("dilations", (1, 1, 1, 1))),
              "contract_dilation": bool(backbone.get("contract_dilation", False)),
              "align_corners": bool(head.get("align_corners", False))}
    stride = STEM_STRIDE * math.prod(layout["strides"])
    _require(stride == 8, path, f"its backbone has output stride {stride} (strides "
             f"{','.join(map(str, layout['strides']))}; only the d8 configs' output stride 8 is built)")
    return layout


def model_config_for(state: dict[str, torch.Tensor], meta: MmsegMeta, path) -> tuple[PSPNetConfig, bool]:
    """The PSPNetConfig of an mmseg PSPNet (mmseg key names), and whether its aux head is kept."""
    model = meta.model
    if model:
        _check_config(model, path)
    if "backbone.stem.0.weight" in state:
        stem, stem_key = "deep", "backbone.stem.6.weight"
    elif "backbone.conv1.weight" in state:
        stem, stem_key = "plain", "backbone.conv1.weight"
    else:
        first = next((k for k in state if k.startswith("backbone.")), "no backbone.* keys")
        raise CheckpointError(f"{path}: mmseg checkpoint's backbone is not a ResNet/ResNetV1c (first key {first})")
    _require(_channels(state, "backbone.layer1.0.conv1.weight", path) == 64, path,
             "its ResNet is not 64 channels wide (base_channels)")
    block = "bottleneck" if "backbone.layer1.0.conv3.weight" in state else "basic"
    depths = tuple(_count(state, f"backbone.layer{i}.") for i in range(1, 5))
    depth = DEPTHS.get((block, depths))
    _require(depth is not None, path, f"its ResNet has {block} blocks {depths}, not ResNet-18/34/50/101/152")
    num_scales = _count(state, "decode_head.psp_modules.")
    _require(num_scales > 0, path, "its decode head has no psp_modules (not a PSPHead)")
    scales = tuple((model.get("decode_head") or {}).get("pool_scales", ())) or ((1, 2, 3, 6) if num_scales == 4 else ())
    _require(len(scales) == num_scales, path, f"its {num_scales} pyramid modules do not match pool_scales {scales}")
    aux = _aux_usable(model, state)
    if not aux and any(k.startswith("auxiliary_head.") for k in state):
        notice_once(f"{path}:aux", f"{path}: the auxiliary head is not mmseg's one-conv FCNHead; it is left out "
                    "(it is used in training only)")
    arch = f"mmseg-r{depth}{'' if stem == 'deep' else 'b'}-d8"
    head = model.get("decode_head") or {}
    config = replace(model_config(arch, _channels(state, "decode_head.conv_seg.weight", path), bins=scales, aux=aux,
                                  dropout=float(head.get("dropout_ratio", 0.1))),
                     stem_channels=_channels(state, stem_key, path),
                     head_channels=_channels(state, "decode_head.bottleneck.conv.weight", path),
                     ppm_channels=_channels(state, "decode_head.psp_modules.0.1.conv.weight", path),
                     aux_channels=_channels(state, "auxiliary_head.convs.0.conv.weight", path) if aux
                     else VARIANTS[arch].aux_channels,
                     **_layout(model, path))
    return config, aux


# ---- the description ------------------------------------------------------------------------------------

def _normalisation(config: dict, path) -> tuple[tuple, tuple]:
    """mean/std (RGB, 0..255) from the 1.x data_preprocessor or the 0.x img_norm_cfg, else ImageNet's."""
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    candidates = ((model.get("data_preprocessor"), "bgr_to_rgb"), (config.get("data_preprocessor"), "bgr_to_rgb"),
                  (config.get("img_norm_cfg"), "to_rgb"))
    for cfg, rgb_key in candidates:
        if isinstance(cfg, dict) and "mean" in cfg and "std" in cfg:
            _require(cfg.get(rgb_key, True), path, "its model takes BGR input")
            return tuple(cfg["mean"]), tuple(cfg["std"])
    return IMAGENET_MEAN, IMAGENET_STD


def _input_size(config: dict, arch: str) -> tuple[int, int]:
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    for size in (config.get("crop_size"), (model.get("data_preprocessor") or {}).get("size")):
        if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) for v in size):
            return int(size[0]), int(size[1])
    return VARIANTS[arch].input_size


def _labels(meta: MmsegMeta, num_classes: int, path) -> LabelSet:
    """The checkpoint's names (and palette), else its dataset's, else the published set of that size."""
    dataset = DATASET_TYPES.get(str(meta.config.get("dataset_type", "")), "")
    if meta.classes:
        if len(meta.classes) != num_classes:
            raise CheckpointError(f"{path}: the meta lists {len(meta.classes)} classes but conv_seg has "
                                  f"{num_classes} outputs")
        # Compared without surrounding spaces: mmseg's ADE20K names include 'bed '.
        stripped = tuple(name.strip() for name in meta.classes)
        known = next((ls for ls in LABEL_SETS.values() if ls.class_names == stripped), None)
        palette = meta.palette if len(meta.palette) == num_classes else (
            known.palette if known else generic_palette(num_classes))
        return LabelSet(known.name if known else dataset, meta.classes, palette)
    if dataset and LABEL_SETS[dataset].num_classes == num_classes:
        return LABEL_SETS[dataset]
    return label_set_for(num_classes)


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value if isinstance(value, (str, int, float, bool)) or value is None else repr(value)


def model_info_for(config: PSPNetConfig, meta: MmsegMeta, path) -> ModelInfo:
    labels = _labels(meta, config.num_classes, path)
    mean, std = _normalisation(meta.config, path)
    extra = {"source": "mmsegmentation" + (f" {meta.version}" if meta.version else "")}
    if isinstance(meta.model.get("test_cfg"), dict):
        extra["mmseg_test_cfg"] = _json_safe(meta.model["test_cfg"])
    return ModelInfo(arch=config.arch, num_classes=config.num_classes, class_names=labels.class_names,
                     palette=labels.palette, mean=mean, std=std, input_size=_input_size(meta.config, config.arch),
                     dataset=labels.name, extra=extra)


def read_mmseg(obj: dict, state: dict[str, torch.Tensor], path: str | os.PathLike
               ) -> tuple[PSPNetConfig, dict[str, torch.Tensor], ModelInfo]:
    """(config, state in our key names, description) of an mmseg PSPNet checkpoint."""
    meta = read_meta(obj, path)
    config, aux = model_config_for(state, meta, path)
    if not aux:
        state = {k: v for k, v in state.items() if not k.startswith("auxiliary_head.")}
    return config, rename_keys(state, path), model_info_for(config, meta, path)
