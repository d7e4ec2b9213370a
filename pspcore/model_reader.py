"""ModelInfo of any deployed model file, chosen by its suffix. Above both formats it reads (the engine file
format needs ModelInfo, so the dispatch cannot live in pspcore.model_info)."""
from __future__ import annotations

import os
from pathlib import Path

from pspcore.engine_file import ENGINE_SUFFIXES, read_engine_info
from pspcore.errors import InputError
from pspcore.model_info import ModelInfo, read_onnx_info


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """ModelInfo of a deployed model file: .onnx or a TensorRT engine (.engine/.plan/.trt)."""
    suffix = Path(path).suffix.lower()
    if suffix in ENGINE_SUFFIXES:
        return read_engine_info(path)
    if suffix == ".onnx":
        return read_onnx_info(path)
    raise InputError(f"{path}: cannot read model info from a {suffix or 'suffix-less'} file; "
                     "expected .onnx or a TensorRT engine (.engine/.plan)")
