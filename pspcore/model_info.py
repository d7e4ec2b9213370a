"""What travels with a model: classes, palette, normalisation and input size, stored in checkpoints, in ONNX
`metadata_props`, in Triton configs and in engine sidecars, so no command needs them repeated. Also the one
fallback for a model exported elsewhere (defaults read off its tensor shapes), and reading an ONNX file's info."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from pspcore.class_names import class_names_for, generic_class_name
from pspcore.errors import InputError, notice_once
from pspcore.files import require_file

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255
IMAGENET_STD = (58.395, 57.12, 57.375)
PROP_PREFIX = "pspnet."
INPUT_NAME = "image"  # float32 [N, 3, H, W], normalised RGB
# ModelInfo.extra keys a precision conversion writes (export.precision) and later stages read
EXTRA_INT8_TARGET = "int8_target"  # the INT8 target's name: "tensorrt", "onnxruntime", "openvino"
EXTRA_CALIBRATION = "calibration"  # {"method", "images", "size": [H, W]}
EXTRA_PRECISION_REPAIR = "precision_repair"  # what the verified conversion's repair did
EXTRA_OPENVINO = "openvino"  # bf16: {"inference_precision", "verified_in"}: asked of OpenVINO, and measured in


@dataclass(frozen=True)
class ModelInfo:
    """Everything a later stage needs to know about a model besides its weights."""

    arch: str = "unknown"
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()  # RGB per class
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: tuple[int, int] | None = None  # (H, W) the model was trained / exported at
    dataset: str = ""
    layout: str = "NCHW"
    output: str = "logits"  # "logits" [N, C, H, W] float or "labels" [N, H, W] int
    precision: str = "fp32"
    dynamic_batch: bool = True
    dynamic_shape: bool = False
    exporter: str = ""
    source_sha256: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        # Normalise JSON lists to tuples so equality and hashing work after a round trip.
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "palette", tuple(tuple(int(v) for v in c) for c in self.palette))
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.input_size is not None:
            object.__setattr__(self, "input_size", tuple(int(v) for v in self.input_size))

    def with_(self, **changes) -> "ModelInfo":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "ModelInfo":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown model metadata fields: {', '.join(unknown)}")
        return cls(**data)

    def to_props(self) -> dict[str, str]:
        """ONNX metadata_props: one JSON-encoded value per field, readable in Netron."""
        return {PROP_PREFIX + k: json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> "ModelInfo | None":
        """The info stored by `to_props`, or None for a model that carries none (not exported by us)."""
        ours = {k[len(PROP_PREFIX):]: v for k, v in props.items() if k.startswith(PROP_PREFIX)}
        if not ours:
            return None
        try:
            data = {k: json.loads(v) for k, v in ours.items()}
        except json.JSONDecodeError as exc:
            raise InputError(f"corrupt pspnet metadata in model: {exc}") from None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def class_name(self, index: int) -> str:
        return self.class_names[index] if index < len(self.class_names) else generic_class_name(index)


def generic_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC bit-interleaving palette, extended to any class count: distinct, stable colours."""
    colours = []
    for label in range(num_classes):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours.append((r, g, b))
    return tuple(colours)


def default_info(num_classes: int = 0, input_size: tuple[int, int] | None = None,
                 output: str = "logits") -> ModelInfo:
    """What we assume for a model exported elsewhere: generic names and palette, ImageNet mean/std."""
    # A labels output hides the class count: colour every value a uint8 label can take.
    colours = num_classes if num_classes > 0 else 256
    return ModelInfo(num_classes=max(num_classes, 0), class_names=class_names_for(num_classes),
                     palette=generic_palette(colours), input_size=input_size, output=output,
                     dynamic_shape=input_size is None)


def _fixed(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def fallback_info(source: str, input_shape, output_name: str, output_shape) -> ModelInfo:
    """The one guess for a model without our metadata, read off its first input [N, 3, H, W] and first
    output (logits [N, C, H, W] or labels [N, H, W]; None or -1 for an open dimension), with a notice."""
    in_shape, out_shape = list(input_shape or ()), list(output_shape or ())
    output = "labels" if len(out_shape) == 3 or output_name == "labels" else "logits"
    num_classes = (_fixed(out_shape[1]) if output == "logits" and len(out_shape) == 4 else None) or 0
    size = (_fixed(in_shape[2]), _fixed(in_shape[3])) if len(in_shape) == 4 else (None, None)
    notice_once(source, f"{Path(source).name} carries no pspnet metadata; assuming {num_classes or 'unknown'} "
                "classes, a generic palette and ImageNet mean/std")
    return default_info(num_classes, size if None not in size else None, output)


def info_from_session(session, path: str | os.PathLike) -> ModelInfo:
    """ModelInfo of a loaded onnxruntime.InferenceSession: our metadata, else the fallback from its shapes."""
    info = ModelInfo.from_props(dict(session.get_modelmeta().custom_metadata_map))
    if info is not None:
        return info
    out = session.get_outputs()[0]
    return fallback_info(str(path), session.get_inputs()[0].shape, out.name, out.shape)


def read_onnx_info(path: str | os.PathLike) -> ModelInfo:
    """ModelInfo of an ONNX file (loads it in a CPU session without graph optimisation: metadata only)."""
    from pspcore.onnx_session import SessionFromOnnx

    p = require_file(path, "model")
    return info_from_session(SessionFromOnnx(p, optimize=False)(), p)
