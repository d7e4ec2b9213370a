"""What travels with a model: classes, palette, normalisation and input size, stored in checkpoints and in
ONNX `metadata_props`, so no command needs them repeated on its command line."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace

from runtime.errors import InputError

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255
IMAGENET_STD = (58.395, 57.12, 57.375)
PROP_PREFIX = "pspnet."
INPUT_NAME = "image"  # float32 [N, 3, H, W], normalised RGB


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
        return self.class_names[index] if index < len(self.class_names) else f"class_{index}"
