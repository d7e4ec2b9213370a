"""The ModelInfo a deployed model carries: ONNX metadata_props (read through onnxruntime, so the onnx package
is not needed) or a TensorRT engine's JSON sidecar. A model without our metadata gets defaults and a notice."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from runtime.errors import InputError
from runtime.files import require_file
from runtime.labels import generic_palette
from runtime.metadata import ModelInfo

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
_noticed: set[str] = set()


def notice_once(key: str, message: str) -> None:
    """Print `notice: message` on stderr the first time `key` is seen in this process."""
    if key not in _noticed:
        _noticed.add(key)
        print(f"notice: {message}", file=sys.stderr)


def default_info(num_classes: int = 0, input_size: tuple[int, int] | None = None,
                 output: str = "logits") -> ModelInfo:
    """What we assume for a model exported elsewhere: generic names and palette, ImageNet mean/std."""
    # A labels output hides the class count: colour every value a uint8 label can take.
    colours = num_classes if num_classes > 0 else 256
    return ModelInfo(num_classes=max(num_classes, 0), class_names=tuple(f"class_{i}" for i in range(num_classes)),
                     palette=generic_palette(colours), input_size=input_size, output=output,
                     dynamic_shape=input_size is None)


def _fixed(dim) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def info_from_session(session, path: str | os.PathLike) -> ModelInfo:
    """ModelInfo of a loaded onnxruntime.InferenceSession: our metadata, else defaults read off its shapes."""
    props = dict(session.get_modelmeta().custom_metadata_map)
    info = ModelInfo.from_props(props)
    if info is not None:
        return info
    in_shape = session.get_inputs()[0].shape
    out = session.get_outputs()[0]
    output = "labels" if len(out.shape) == 3 or out.name == "labels" else "logits"
    num_classes = _fixed(out.shape[1]) if output == "logits" and len(out.shape) == 4 else None
    size = (_fixed(in_shape[2]), _fixed(in_shape[3])) if len(in_shape) == 4 else (None, None)
    info = default_info(num_classes or 0, size if None not in size else None, output)
    notice_once(str(path), f"{Path(path).name} carries no pspnet metadata; assuming "
                f"{num_classes or 'unknown'} classes, a generic palette and ImageNet mean/std")
    return info


def read_onnx_info(path: str | os.PathLike) -> ModelInfo:
    """ModelInfo of an ONNX file (loads it in a CPU session without graph optimisation: metadata only)."""
    import onnxruntime as ort

    p = require_file(path, "model")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise InputError(f"{p}: not a loadable ONNX model: {str(exc).strip().splitlines()[0]}") from None
    return info_from_session(session, p)


def engine_sidecar(engine_path: str | os.PathLike) -> Path:
    """`model.engine` -> `model.engine.json`: where the engine builder records ModelInfo and build facts."""
    return Path(str(engine_path) + ".json")


def read_engine_info(path: str | os.PathLike) -> ModelInfo:
    """ModelInfo from an engine's sidecar (key "info"); defaults and a notice when there is none."""
    p = require_file(path, "engine")
    sidecar = engine_sidecar(p)
    if not sidecar.exists():
        notice_once(str(p), f"{p.name} has no sidecar {sidecar.name}; assuming generic classes, palette "
                    "and ImageNet mean/std")
        return default_info()
    try:
        data = json.loads(sidecar.read_text())
        return ModelInfo.from_dict(data["info"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{sidecar}: not a valid engine sidecar ({type(exc).__name__}: {exc})") from None


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """ModelInfo of a deployed model file: .onnx or a TensorRT engine (.engine/.plan/.trt)."""
    suffix = Path(path).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return read_engine_info(path)
    if suffix == ".onnx":
        return read_onnx_info(path)
    raise InputError(f"{path}: cannot read model info from a {suffix or 'suffix-less'} file; "
                     "expected .onnx or a TensorRT engine (.engine/.plan)")
