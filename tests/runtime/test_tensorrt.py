"""The TensorRT backend's CPU-checkable parts: lazy imports, the input spec of a profile, install advice."""
import importlib.util
import json
import subprocess
import sys

import pytest

from pspcore.engine_file import sidecar_path, write_sidecar
from pspcore.errors import BackendUnavailable, InputError
from runtime.backends.tensorrt import TensorRTRunner, _engine_input_spec, trt_to_numpy
from tests.pspcore.test_engine_file import _sidecar

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
def test_module_imports_without_tensorrt_or_cuda():
    code = ("import sys; sys.modules['tensorrt'] = None; sys.modules['cuda'] = None\n"
            "import runtime.backends.tensorrt as t\nprint(t.TensorRTRunner.unavailable_reason())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install tensorrt" in out.stdout


def test_input_spec_from_profiles():
    spec = _engine_input_spec(_sidecar())
    assert (spec.size, spec.min_batch, spec.max_batch, spec.fixed_batch) == ((65, 65), 1, 4, None)
    dynamic = _sidecar(profiles={"image": {"min": [2, 3, 33, 33], "opt": [2, 3, 65, 65], "max": [2, 3, 129, 129]}})
    spec = _engine_input_spec(dynamic)
    assert (spec.size, spec.fixed_batch) == (None, 2)


def test_tensorrt_types_map_to_numpy_by_name():
    import numpy as np

    class DataType:
        FLOAT, HALF, INT8, INT32, INT64, BOOL, UINT8 = range(7)

    trt = type("trt", (), {"DataType": DataType})
    assert trt_to_numpy(trt, DataType.HALF) == np.float16
    assert trt_to_numpy(trt, DataType.UINT8) == np.uint8
    with pytest.raises(InputError):
        trt_to_numpy(trt, 99)


@pytest.mark.skipif(HAVE_TRT, reason="checks the message shown where TensorRT is not installed")
def test_runner_without_tensorrt_says_how_to_install(tmp_path):
    from pspcore.registry import create_runner

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    write_sidecar(sidecar_path(engine), _sidecar())
    with pytest.raises(BackendUnavailable, match="pip install tensorrt"):
        TensorRTRunner(engine)
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        create_runner("tensorrt", engine)
