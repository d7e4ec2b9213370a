"""The TensorRT backend's CPU-checkable parts: lazy imports, the input spec of a profile, install advice."""
import gc
import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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
    runner = TensorRTRunner(engine)  # stores its options only
    with pytest.raises(BackendUnavailable, match="pip install tensorrt"):
        runner.activate()
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        create_runner("tensorrt", engine)


# ---- the runner on a CPU, against stand-ins for cuda-python and TensorRT (tests/runtime/fake_cuda.py) ----

@dataclass
class FakeMachine:
    cudart: "FakeCudart"
    trt: "FakeTensorRT"
    make_engine: Callable[..., Path]

    def assert_nothing_left(self) -> None:
        """Every allocation, stream, event, graph, graph exec, context and engine released."""
        gc.collect()
        assert set(self.cudart.live().values()) == {0}, self.cudart.live()
        assert self.cudart.execs_created == self.cudart.execs_destroyed
        assert (self.trt.live_contexts, self.trt.live_engines) == (0, 0)


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path) -> FakeMachine:
    """A 2-GPU stand-in machine and engines built "here" (make_engine(name) -> path)."""
    import hashlib

    import pspcore.nvidia
    import runtime.backends.tensorrt as trt_module
    from tests.pspcore.test_engine_file import BUILT
    from tests.runtime.fake_cuda import FakeCudart, FakeTensorRT

    cudart = FakeCudart()
    trt = FakeTensorRT(cudart)
    monkeypatch.setattr(pspcore.nvidia, "import_cudart", lambda: cudart)
    monkeypatch.setattr(pspcore.nvidia, "tensorrt_cuda_major", lambda distributions=None: 13)
    monkeypatch.setattr(trt_module, "import_cudart", lambda: cudart)
    monkeypatch.setattr(trt_module, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(trt_module, "current_platform", lambda device=0: BUILT)

    def make_engine(name: str = "m.engine", data: bytes = b"engine bytes", **changes):
        engine = tmp_path / name
        engine.write_bytes(data)
        sha = changes.pop("engine_sha256", hashlib.sha256(data).hexdigest())
        write_sidecar(sidecar_path(engine), _sidecar(engine_sha256=sha, **changes))
        return engine

    return FakeMachine(cudart, trt, make_engine)


def _expected(x):
    return np.concatenate([x[:, :1], -x[:, :1]], axis=1)


def _images(seed: int, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 65, 65)).astype(np.float32)


def test_init_stores_options_and_activate_loads(fake_gpu):
    runner = TensorRTRunner(fake_gpu.make_engine())
    assert fake_gpu.trt.live_engines == 0 and set(fake_gpu.cudart.live().values()) == {0}
    runner.activate()
    runner.activate()  # idempotent
    assert runner.info.num_classes == 3 and runner.input_spec.max_batch == 4
    assert fake_gpu.trt.live_engines == 1 and fake_gpu.cudart.live()["streams"] == 1
    runner.deactivate()
    runner.deactivate()  # idempotent
    fake_gpu.assert_nothing_left()
    with runner:  # and again after a deactivate
        np.testing.assert_array_equal(runner.infer(_images(0)), _expected(_images(0)))
    fake_gpu.assert_nothing_left()


def test_runner_runs_an_engine_in_profile_sized_calls(fake_gpu):
    from tests.runtime.fake_cuda import COPY_MS, KERNEL_MS

    runner = TensorRTRunner(fake_gpu.make_engine())
    x = _images(0, batch=6)
    np.testing.assert_array_equal(runner.infer(x), _expected(x))  # 4 + 2 (profile max 4)
    timing = runner.last_timing  # CUDA events around each part, two calls
    assert (timing.h2d_ms, timing.compute_ms, timing.d2h_ms) == (2 * COPY_MS, 2 * KERNEL_MS, 2 * COPY_MS)
    with pytest.raises(InputError, match="takes 65x65 inputs, got 33x33"):
        runner.infer(np.zeros((1, 3, 33, 33), np.float32))
    runner.deactivate()
    fake_gpu.assert_nothing_left()


def test_a_second_call_gives_the_second_answer(fake_gpu):
    with TensorRTRunner(fake_gpu.make_engine()) as runner:
        for seed in (1, 2, 3):
            np.testing.assert_array_equal(runner.infer(_images(seed, 2)), _expected(_images(seed, 2)))


def test_two_runners_on_two_gpus_in_one_thread(fake_gpu):
    """Each runner allocates and launches on its own GPU, whatever the other left current."""
    cudart, make_engine = fake_gpu.cudart, fake_gpu.make_engine
    first = TensorRTRunner(make_engine("a.engine"), device=0)
    second = TensorRTRunner(make_engine("b.engine"), device=1)
    x = np.ones((2, 3, 65, 65), np.float32)
    np.testing.assert_array_equal(first.infer(x), _expected(x))
    np.testing.assert_array_equal(second.infer(2 * x), _expected(2 * x))  # leaves GPU 1 current
    np.testing.assert_array_equal(first.infer(3 * x), _expected(3 * x))
    gpus = {address: gpu for address, (gpu, _) in cudart.device_memory.items()}
    assert sorted(gpus.values()) == [0, 0, 1, 1]  # input and output buffers of each, on its own GPU
    first.deactivate()  # frees on GPU 0 although GPU 1 was current (the stand-in checks)
    second.deactivate()
    fake_gpu.assert_nothing_left()


def test_engine_that_is_not_its_sidecars_or_from_elsewhere_is_refused(fake_gpu, monkeypatch):
    import runtime.backends.tensorrt as trt_module
    from pspcore.engine_file import Platform

    with pytest.raises(InputError, match="does not match its sidecar .sha256 differs."):
        TensorRTRunner(fake_gpu.make_engine(engine_sha256="00" * 32)).activate()
    monkeypatch.setattr(trt_module, "current_platform", lambda device=0: Platform("10.13.3.9", "NVIDIA H100", "9.0"))
    with pytest.raises(InputError, match="rebuild it here"):
        TensorRTRunner(fake_gpu.make_engine()).activate()
    fake_gpu.assert_nothing_left()


def test_cuda_graph_replays_new_inputs(fake_gpu):
    """The graph captured on the first input is replayed on the next ones (it reads the input buffer as it
    is at launch): each call must give its own input's answer, not the first one's."""
    cudart = fake_gpu.cudart
    runner = TensorRTRunner(fake_gpu.make_engine(), cuda_graphs=True)
    for seed in (1, 2, 3):
        np.testing.assert_array_equal(runner.infer(_images(seed)), _expected(_images(seed)))
    assert runner.graph_launches == cudart.graph_launches == 3
    assert cudart.captures_begun == 1 and cudart.execs_created == 1  # captured once for this shape
    np.testing.assert_array_equal(runner.infer(_images(4, 2)), _expected(_images(4, 2)))  # a new shape
    assert cudart.execs_created == 2 and cudart.execs_destroyed == 1  # the old shape's graph is gone
    assert runner.notes == []
    runner.deactivate()
    fake_gpu.assert_nothing_left()


@pytest.mark.parametrize("failure", ["launch", "cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiate"])
def test_cuda_graph_failure_falls_back_once_without_leaking(fake_gpu, failure):
    """A shape that cannot be captured or instantiated is launched directly from then on: right answers, the
    failed graph destroyed, no new capture attempt on every call (N7), also when the capture could not even
    begin; the failure's CUDA error is cleared, else TensorRT's next launch reports it as its own."""
    from tests.runtime.fake_cuda import Error

    cudart = fake_gpu.cudart
    if failure == "launch":
        cudart.capture_fails = True
    else:
        cudart.fail(failure, Error.cudaErrorNotSupported)
    runner = TensorRTRunner(fake_gpu.make_engine(), cuda_graphs=True)
    for seed in (1, 2, 3):
        np.testing.assert_array_equal(runner.infer(_images(seed)), _expected(_images(seed)))
    assert cudart.captures_begun == 1 and runner.graph_launches == 0
    assert cudart.live()["graphs"] == 0 and cudart.live()["graph execs"] == 0
    assert len(runner.notes) == 1 and "cannot be replayed as a CUDA graph" in runner.notes[0]
    runner.deactivate()
    fake_gpu.assert_nothing_left()


@pytest.mark.parametrize("call", ["cudaMalloc", "cudaHostAlloc"])
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_allocation_failure_leaves_the_runner_consistent(fake_gpu, call, cuda_graph):
    """A failed allocation while a shape grows: the call fails with the CUDA call named, nothing half-made
    is kept (a device buffer got before a failed pinned allocation is freed), and the next call, even of
    the old shape, runs on fresh buffers instead of freed ones (N8)."""
    from pspcore.errors import PSPError

    cudart = fake_gpu.cudart
    runner = TensorRTRunner(fake_gpu.make_engine(), cuda_graphs=cuda_graph)
    np.testing.assert_array_equal(runner.infer(_images(1)), _expected(_images(1)))
    cudart.fail(call)
    with pytest.raises(PSPError, match=call):
        runner.infer(_images(2, 4))
    assert cudart.live()["device buffers"] == 1  # the output buffer; the input's device buffer was freed
    for x in (_images(3), _images(4, 4), _images(5)):
        np.testing.assert_array_equal(runner.infer(x), _expected(x))
    runner.deactivate()
    fake_gpu.assert_nothing_left()


def test_failed_first_allocation_keeps_nothing(fake_gpu):
    from pspcore.errors import PSPError

    fake_gpu.cudart.fail("cudaHostAlloc")
    runner = TensorRTRunner(fake_gpu.make_engine())
    with pytest.raises(PSPError, match="cudaHostAlloc"):
        runner.infer(_images(1))
    assert fake_gpu.cudart.live()["device buffers"] == 0
    np.testing.assert_array_equal(runner.infer(_images(2)), _expected(_images(2)))
    runner.deactivate()
    fake_gpu.assert_nothing_left()


def test_unavailable_reasons_tell_driver_from_device(fake_gpu):
    from tests.runtime.fake_cuda import Error

    cudart = fake_gpu.cudart
    assert TensorRTRunner.unavailable_reason() is None
    cudart.count_error, cudart.driver_version = Error.cudaErrorInsufficientDriver, 12080
    reason = TensorRTRunner.unavailable_reason()
    assert "installed but cannot use this NVIDIA driver" in reason and "CUDA 12.8" in reason
    cudart.count_error = Error.cudaErrorNoDevice
    assert "no CUDA GPU is visible" in TensorRTRunner.unavailable_reason()


def test_no_driver_at_all_is_not_called_too_old(fake_gpu):
    """Without any driver, cudaGetDeviceCount also says cudaErrorInsufficientDriver; the driver version (0)
    tells the two apart (N3)."""
    from tests.runtime.fake_cuda import Error

    cudart = fake_gpu.cudart
    cudart.count_error, cudart.driver_version = Error.cudaErrorInsufficientDriver, 0
    reason = TensorRTRunner.unavailable_reason()
    assert "no NVIDIA driver is installed" in reason and "too old" not in reason
    assert "cannot use this NVIDIA driver" not in reason


@pytest.mark.parametrize("trt_cuda,driver,expected", [
    (13, 13000, None), (13, 13020, None), (12, 12080, None), (12, 13000, None),
    (13, 12080, "pip install tensorrt-cu12"), (13, 12040, "r580")], ids=lambda v: str(v).split()[-1])
def test_tensorrt_build_is_checked_against_the_driver(fake_gpu, monkeypatch, trt_cuda, driver, expected):
    """tensorrt>=10 installs the CUDA 13 build, which needs driver r580+: a CUDA 12 driver gets advice naming
    the CUDA 12 package, not only the cuda-python downgrade (N4)."""
    import pspcore.nvidia

    monkeypatch.setattr(pspcore.nvidia, "tensorrt_cuda_major", lambda distributions=None: trt_cuda)
    fake_gpu.cudart.driver_version = driver
    reason = TensorRTRunner.unavailable_reason()
    if expected is None:
        assert reason is None
    else:
        assert expected in reason and "tensorrt-cu13" in reason and "CUDA 12." in reason


def test_tensorrt_cuda_major_from_its_distributions():
    from pspcore.nvidia import tensorrt_cuda_major

    cu13 = {"tensorrt": ["tensorrt_cu13"], "tensorrt_libs": ["tensorrt_cu13_libs"], "numpy": ["numpy"]}
    assert tensorrt_cuda_major(cu13) == 13
    assert tensorrt_cuda_major({"tensorrt": ["tensorrt-cu12"], "tensorrt_bindings": ["tensorrt-cu12-bindings"]}) == 12
    assert tensorrt_cuda_major({"tensorrt": ["tensorrt"]}) is None  # a tar install: cannot tell
    assert tensorrt_cuda_major({"tensorrt": ["tensorrt_cu12"], "tensorrt_libs": ["tensorrt_cu13_libs"]}) is None


def test_psp_infer_cuda_graphs_reaches_the_tensorrt_runner(fake_gpu, monkeypatch, tmp_path):
    """`psp-infer x.engine --cuda-graphs` runs the engine as a CUDA graph (the flag comes from TensorRT's own
    declaration, so the command and the runner cannot name it differently); without the flag nothing is
    captured."""
    import cv2
    from click.testing import CliRunner

    from runtime.cli import main

    monkeypatch.setattr(TensorRTRunner, "requires", ())  # the stand-in machine has what it needs
    monkeypatch.setattr(TensorRTRunner, "unavailable_reason", classmethod(lambda cls: None))
    engine = fake_gpu.make_engine("x.engine")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.png"), np.full((65, 65, 3), 40 * i, np.uint8))
    cudart = fake_gpu.cudart
    plain = CliRunner().invoke(main, [str(engine), str(frames), "-o", str(tmp_path / "plain"), "-q"])
    assert plain.exit_code == 0, plain.output
    assert cudart.captures_begun == 0 and cudart.graph_launches == 0
    graphs = CliRunner().invoke(main, [str(engine), str(frames), "-o", str(tmp_path / "graphs"), "-q",
                                       "--cuda-graphs"])
    assert graphs.exit_code == 0, graphs.output
    assert cudart.captures_begun == 1 and cudart.graph_launches == 3  # captured once, replayed per frame
    fake_gpu.assert_nothing_left()
