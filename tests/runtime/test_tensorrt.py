"""The TensorRT backend's CPU-checkable parts: lazy imports, the input spec of a profile, install advice."""
import importlib.util
import json
import subprocess
import sys

import numpy as np
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


# ---- the runner on a CPU, against stand-ins for cuda-python and TensorRT (tests/runtime/fake_cuda.py) ----

@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """(cudart, make_engine(name) -> path): a 2-GPU stand-in machine and engines built "here"."""
    import hashlib

    import pspcore.nvidia
    import runtime.backends.tensorrt as trt_module
    from tests.pspcore.test_engine_file import BUILT
    from tests.runtime.fake_cuda import FakeCudart, FakeTensorRT

    cudart = FakeCudart()
    trt = FakeTensorRT(cudart)
    monkeypatch.setattr(pspcore.nvidia, "import_cudart", lambda: cudart)
    monkeypatch.setattr(trt_module, "import_cudart", lambda: cudart)
    monkeypatch.setattr(trt_module, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(trt_module, "current_platform", lambda device=0: BUILT)

    def make_engine(name: str = "m.engine", data: bytes = b"engine bytes", **changes):
        engine = tmp_path / name
        engine.write_bytes(data)
        sha = changes.pop("engine_sha256", hashlib.sha256(data).hexdigest())
        write_sidecar(sidecar_path(engine), _sidecar(engine_sha256=sha, **changes))
        return engine

    return cudart, make_engine


def _expected(x):
    return np.concatenate([x[:, :1], -x[:, :1]], axis=1)


def test_runner_runs_an_engine_in_profile_sized_calls(fake_gpu):
    cudart, make_engine = fake_gpu
    runner = TensorRTRunner(make_engine())
    x = np.random.default_rng(0).standard_normal((6, 3, 65, 65)).astype(np.float32)
    np.testing.assert_array_equal(runner.infer(x), _expected(x))  # 4 + 2 (profile max 4)
    timing = runner.last_timing
    assert (timing.h2d_ms, timing.compute_ms, timing.d2h_ms) == (0.5, 0.5, 0.5)  # CUDA events, two calls
    with pytest.raises(InputError, match="takes 65x65 inputs, got 33x33"):
        runner.infer(np.zeros((1, 3, 33, 33), np.float32))
    runner.deactivate()
    assert cudart.device_memory == {} and cudart.host_memory == {}


def test_two_runners_on_two_gpus_in_one_thread(fake_gpu):
    """Each runner allocates and launches on its own GPU, whatever the other left current."""
    cudart, make_engine = fake_gpu
    first = TensorRTRunner(make_engine("a.engine"), device=0)
    second = TensorRTRunner(make_engine("b.engine"), device=1)  # leaves GPU 1 current
    x = np.ones((2, 3, 65, 65), np.float32)
    np.testing.assert_array_equal(first.infer(x), _expected(x))
    np.testing.assert_array_equal(second.infer(2 * x), _expected(2 * x))
    np.testing.assert_array_equal(first.infer(3 * x), _expected(3 * x))
    gpus = {address: gpu for address, (gpu, _) in cudart.device_memory.items()}
    assert sorted(gpus.values()) == [0, 0, 1, 1]  # input and output buffers of each, on its own GPU
    first.deactivate()  # frees on GPU 0 although GPU 1 was current (the stand-in checks)
    second.deactivate()
    assert cudart.device_memory == {}


def test_engine_that_is_not_its_sidecars_or_from_elsewhere_is_refused(fake_gpu, monkeypatch):
    import runtime.backends.tensorrt as trt_module
    from pspcore.engine_file import Platform

    _, make_engine = fake_gpu
    with pytest.raises(InputError, match="does not match its sidecar .sha256 differs."):
        TensorRTRunner(make_engine(engine_sha256="00" * 32))
    monkeypatch.setattr(trt_module, "current_platform", lambda device=0: Platform("10.13.3.9", "NVIDIA H100", "9.0"))
    with pytest.raises(InputError, match="rebuild it here"):
        TensorRTRunner(make_engine())


@pytest.mark.parametrize("capture_fails", [False, True])
def test_cuda_graph_replays_or_falls_back_without_leaking(fake_gpu, capture_fails):
    cudart, make_engine = fake_gpu
    cudart.capture_fails = capture_fails
    runner = TensorRTRunner(make_engine(), cuda_graph=True)
    x = np.ones((1, 3, 65, 65), np.float32)
    np.testing.assert_array_equal(runner.infer(x), _expected(x))
    assert cudart.graphs_created == 1 and cudart.graphs_destroyed == 1  # no graph left behind either way
    assert runner.cuda_graph is not capture_fails
    assert any("cannot be captured" in n for n in runner.notes) is capture_fails


def test_unavailable_reasons_tell_driver_from_device(fake_gpu):
    from tests.runtime.fake_cuda import Error

    cudart, _ = fake_gpu
    assert TensorRTRunner.unavailable_reason() is None
    cudart.count_error = Error.cudaErrorInsufficientDriver
    assert "installed but cannot use this NVIDIA driver" in TensorRTRunner.unavailable_reason()
    cudart.count_error = Error.cudaErrorNoDevice
    assert "no CUDA GPU is visible" in TensorRTRunner.unavailable_reason()
