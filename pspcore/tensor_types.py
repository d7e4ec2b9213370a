"""Tensor type names across the formats a model passes through: TensorRT's DataType names (as engine sidecars
record them), numpy dtypes and Triton's type names (config `TYPE_<name>`, the wire protocol's `<name>`)."""
from __future__ import annotations

import numpy as np

# tensorrt.DataType.<name> -> numpy (names are stable across TensorRT 10 and 11; BF16 has no numpy type)
TENSORRT_TO_NUMPY = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "UINT8": "uint8", "INT32": "int32",
                     "INT64": "int64", "BOOL": "bool"}
NUMPY_TO_TRITON = {"float32": "FP32", "float16": "FP16", "int8": "INT8", "uint8": "UINT8", "uint16": "UINT16",
                   "int32": "INT32", "int64": "INT64", "bool": "BOOL"}
TENSORRT_TO_TRITON = {**{trt: NUMPY_TO_TRITON[np_name] for trt, np_name in TENSORRT_TO_NUMPY.items()},
                      "BF16": "BF16"}


def numpy_to_triton(dtype) -> str:
    """Triton's name for a numpy dtype ("FP32", "UINT16")."""
    return NUMPY_TO_TRITON[np.dtype(dtype).name]


def triton_config_enum_name(triton_name: str) -> str:
    """The model_config DataType enum name of a Triton type name: the config schema says TYPE_STRING where
    the wire protocol says BYTES; every other name is shared."""
    return "TYPE_" + ("STRING" if triton_name == "BYTES" else triton_name)


def triton_name_of_config_enum(enum_name: str) -> str:
    """The Triton type name of a model_config DataType enum name ("TYPE_STRING" -> "BYTES")."""
    name = enum_name[len("TYPE_"):] if enum_name.startswith("TYPE_") else enum_name
    return "BYTES" if name == "STRING" else name
