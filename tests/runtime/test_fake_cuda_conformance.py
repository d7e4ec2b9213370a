"""The CUDA stand-in (tests/runtime/fake_cuda.py) held to the real cuda-bindings: every function it fakes exists in
`cuda.bindings.runtime` with the same arity and returns a tuple of the same length, its enums and constants
carry the real names and values, and every cudart name the project's code uses exists there. cuda-bindings
imports without a GPU; its calls then return their usual tuples with an error code (FACTS.md), which is all
this needs. What it cannot show is the GPU's behaviour."""
from __future__ import annotations

import enum
import inspect
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.runtime.fake_cuda import FakeCudart

real = pytest.importorskip("cuda.bindings.runtime", reason="the dev extra installs cuda-bindings")
ROOT = Path(__file__).resolve().parents[2]

# Arguments every faked function is called with, on both sides: dummies the real calls answer with an error
# code (no driver here), the stand-in with its own error or a result.
CALLS = {
    "cudaDeviceSynchronize": lambda rt: (), "cudaDriverGetVersion": lambda rt: (),
    "cudaEventCreate": lambda rt: (), "cudaEventDestroy": lambda rt: (0,), "cudaEventElapsedTime": lambda rt: (0, 0),
    "cudaEventRecord": lambda rt: (0, 0), "cudaEventSynchronize": lambda rt: (0,), "cudaFree": lambda rt: (0,),
    "cudaFreeHost": lambda rt: (0,), "cudaGetDeviceCount": lambda rt: (), "cudaGetDeviceProperties": lambda rt: (0,),
    "cudaGetErrorString": lambda rt: (rt.cudaError_t.cudaErrorInvalidValue,), "cudaGetLastError": lambda rt: (),
    "cudaGraphDestroy": lambda rt: (0,), "cudaGraphExecDestroy": lambda rt: (0,),
    "cudaGraphInstantiate": lambda rt: (0, 0), "cudaGraphLaunch": lambda rt: (0, 0),
    "cudaHostAlloc": lambda rt: (16, rt.cudaHostAllocDefault), "cudaMalloc": lambda rt: (16,),
    "cudaMemcpyAsync": lambda rt: (0, 0, 0, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, 0),
    "cudaSetDevice": lambda rt: (0,),
    "cudaStreamBeginCapture": lambda rt: (0, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
    "cudaStreamCreate": lambda rt: (), "cudaStreamCreateWithFlags": lambda rt: (rt.cudaStreamNonBlocking,),
    "cudaStreamDestroy": lambda rt: (0,), "cudaStreamEndCapture": lambda rt: (0,),
    "cudaStreamSynchronize": lambda rt: (0,),
}


def _faked_functions() -> dict[str, object]:
    return {name: inspect.unwrap(value) for name, value in vars(FakeCudart).items()
            if name.startswith("cuda") and inspect.isfunction(value)}


def _faked_constants() -> dict[str, object]:
    return {name: value for name, value in vars(FakeCudart).items()
            if name.startswith("cuda") and not inspect.isfunction(value)}


def _arity(function, drop_self: bool) -> int:
    params = list(inspect.signature(function).parameters.values())[1 if drop_self else 0:]
    assert all(p.kind == p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params), function
    return len(params)


def test_every_faked_function_has_a_call_here():
    assert set(CALLS) == set(_faked_functions())


@pytest.mark.parametrize("name", sorted(CALLS))
def test_faked_function_exists_with_the_same_arity(name):
    function = getattr(real, name, None)
    assert callable(function), f"cuda.bindings.runtime has no {name}"
    fake = _faked_functions()[name]
    assert _arity(fake, drop_self=True) == _arity(function, drop_self=False), inspect.signature(function)
    args = CALLS[name](real)
    assert len(args) == _arity(function, drop_self=False)
    with pytest.raises(TypeError):  # the real binding checks its arity: the signature above is the real one
        function(*args, 0)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_faked_function_returns_a_tuple_as_long_as_the_real_one(name):
    got = getattr(real, name)(*CALLS[name](real))
    faked = getattr(FakeCudart(), name)(*CALLS[name](FakeCudart))
    assert isinstance(got, tuple) and isinstance(faked, tuple)
    assert len(faked) == len(got), (faked, got)
    assert isinstance(got[0], real.cudaError_t)


@pytest.mark.parametrize("name", sorted(_faked_constants()))
def test_faked_enums_and_constants_carry_the_real_names_and_values(name):
    fake, truth = _faked_constants()[name], getattr(real, name, None)
    assert truth is not None, f"cuda.bindings.runtime has no {name}"
    if isinstance(fake, type) and issubclass(fake, enum.Enum):
        members = {m.name: m.value for m in fake}
    elif isinstance(fake, SimpleNamespace):
        members = vars(fake)
    else:
        assert int(fake) == int(truth)
        return
    for member, value in members.items():
        assert hasattr(truth, member), f"{name}.{member} is not in cuda.bindings"
        assert int(getattr(truth, member)) == int(value), f"{name}.{member}"


def test_device_properties_have_the_fields_the_code_reads():
    props = real.cudaDeviceProp()
    for field in ("name", "major", "minor"):  # pspcore.engine_file.current_platform
        assert hasattr(props, field)
    assert set(vars(FakeCudart().cudaGetDeviceProperties(0)[1])) <= {"name", "major", "minor"}


def _names_used_by_the_code() -> set[str]:
    sources = ["pspcore/nvidia.py", "pspcore/engine_file.py", "runtime/backends/tensorrt.py",
               "experiments/gpu_tensorrt.py", "export/engine/build.py"]
    used = set()
    for source in sources:
        text = (ROOT / source).read_text()
        used |= set(re.findall(r"(?:cudart|import_cudart\(\))\.(cuda\w+)", text))
    return used


def test_every_cudart_name_the_code_uses_is_real_and_faked():
    """A misspelt call or enum would pass every stand-in test; here it cannot."""
    used = _names_used_by_the_code()
    assert {"cudaMalloc", "cudaStreamBeginCapture", "cudaGetLastError", "cudaGraphLaunch"} <= used
    assert not {n for n in used if not hasattr(real, n)}, "not in cuda.bindings.runtime"
    assert not {n for n in used if not hasattr(FakeCudart, n)}, "used by the code but not faked"


def test_a_misspelt_name_is_caught(monkeypatch):
    """Garbage for the check above: a name the real module lacks is reported."""
    assert not hasattr(real, "cudaStreamBeginCaptrue")
    monkeypatch.setattr(FakeCudart, "cudaStreamBeginCaptrue", FakeCudart.cudaStreamBeginCapture, raising=False)
    assert "cudaStreamBeginCaptrue" in _faked_functions() and set(CALLS) != set(_faked_functions())


def test_the_real_bindings_report_no_device_here_in_the_shape_the_code_expects():
    """pspcore.nvidia reads (error, count) and (error, version): with the real bindings on this GPU-less machine
    it must give its no-driver or no-device reason, not crash."""
    code = ("from pspcore.nvidia import cuda_unavailable_reason as r; print(r())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() and "not installed" not in out.stdout
