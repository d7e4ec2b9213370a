"""ModelInfo of any deployed model file, chosen by its suffix. Above both formats it reads (the engine file
format needs ModelInfo, so the dispatch cannot live in pspcore.model_info)."""
from __future__ import annotations

import os

from pspcore.engine_file import ENGINE_SUFFIXES, read_engine_info
from pspcore.errors import InputError
from pspcore.files import by_suffix, suffix_of
from pspcore.model_info import ModelInfo, read_onnx_info


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """ModelInfo of a deployed model file: .onnx or a TensorRT engine (.engine/.plan/.trt)."""
    reader = by_suffix(path, {ENGINE_SUFFIXES: read_engine_info, ".onnx": read_onnx_info})
    if reader is None:
        raise InputError(f"{path}: cannot read model info from a {suffix_of(path) or 'suffix-less'} file; "
                         "expected .onnx or a TensorRT engine (.engine/.plan)")
    return reader(path)
