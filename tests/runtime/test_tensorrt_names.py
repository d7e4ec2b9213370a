"""Every TensorRT name the runner, the engine builder and the TensorRT stand-in use exists in the real bindings.
TensorRT cannot be imported here (its libraries do not install on these machines), but the identifier strings of
its Python bindings (tensorrt_bindings/tensorrt.so of the tensorrt-cu13-bindings 11.4 wheel) are kept as test
data (tests/runtime/data/, source and command in its header). What this cannot check: argument counts and
types, return types, and names built at run time (getattr with a computed name)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pspcore.tensor_types import TENSORRT_TO_NUMPY, TENSORRT_TO_TRITON
from tests.runtime.fake_cuda import FakeCudart, FakeTensorRT

ROOT = Path(__file__).resolve().parents[2]
NAMES_FILE = Path(__file__).parent / "data" / "tensorrt-11.4.0.106-names.txt"
# The variables that hold TensorRT objects in the code (builder, config, network, ... and the runner's own).
RECEIVERS = {"trt", "builder", "config", "parser", "network", "cache", "optimisation", "tensor", "engine",
             "context", "_context", "_runtime", "_engine"}
SOURCES = ("export/engine/build.py", "runtime/backends/tensorrt.py", "pspcore/nvidia.py", "pspcore/engine_file.py")


def real_names() -> list[str]:
    return [line for line in NAMES_FILE.read_text().splitlines() if line and not line.startswith("#")]


def is_real(name: str, names: list[str]) -> bool:
    """Present as a whole string or as the tail another literal was merged into (see the data file)."""
    return any(line == name or line.endswith(name) for line in names)


def _chain(node: ast.Attribute) -> list[str]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return parts[::-1]


def names_used_by(source: str) -> set[str]:
    """Attribute names read from TensorRT objects in `source` (code only: docstrings are not attributes)."""
    used = set()
    for node in ast.walk(ast.parse((ROOT / source).read_text())):
        if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "parent", None), ast.Attribute):
            parts = _chain(node)
            if parts and parts[0] == "self":
                parts = parts[1:]
            for i, part in enumerate(parts[:-1]):
                if part in RECEIVERS:
                    used |= {p for p in parts[i + 1:] if not p.startswith("__") and p != "split"}
                    break
    return used


def test_names_file_is_the_real_list():
    names = real_names()
    assert len(names) > 2000 and "execute_async_v3" in names and "deserialize_cuda_engine" in names


@pytest.mark.parametrize("source", SOURCES)
def test_every_tensorrt_name_the_code_uses_is_in_the_bindings(source):
    names = real_names()
    used = names_used_by(source)
    missing = sorted(n for n in used if not is_real(n, names))
    assert not missing, f"{source} uses TensorRT names the 11.4 bindings do not have: {missing}"


def test_the_code_is_read():
    """The reader finds what the runner and builder call (else the test above would pass on nothing)."""
    used = names_used_by("runtime/backends/tensorrt.py") | names_used_by("export/engine/build.py")
    assert {"execute_async_v3", "set_input_shape", "get_tensor_profile_shape", "build_serialized_network",
            "set_memory_pool_limit", "STRONGLY_TYPED", "TF32", "combine", "num_errors", "INPUT"} <= used


def test_a_misspelt_name_is_not_real():
    names = real_names()
    assert not is_real("execute_async_v4", names) and not is_real("set_input_shapes", names)
    assert not is_real("EXPLICIT_BATCHES", names)


def test_tensor_types_are_real_datatype_members():
    names = real_names()
    assert all(is_real(name, names) for name in {*TENSORRT_TO_NUMPY, *TENSORRT_TO_TRITON})


def test_the_tensorrt_stand_in_fakes_only_real_names():
    names = real_names()
    trt = FakeTensorRT(FakeCudart())
    engine = trt.Runtime(None).deserialize_cuda_engine(b"engine")
    faked = {"Runtime", "ILogger", "Severity", "TensorIOMode", "DataType", "deserialize_cuda_engine"}
    faked |= {name for obj in (engine, engine.create_execution_context()) for name in dir(type(obj))
              if not name.startswith("_")}
    faked |= set(vars(trt.TensorIOMode)) | set(vars(trt.DataType)) | {m.name for m in trt.ILogger.Severity}
    assert not sorted(n for n in faked if not is_real(n, names))
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", trt.__version__)
