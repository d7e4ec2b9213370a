"""TensorRT backend: runs a serialized engine with cuda-python device buffers, pinned host buffers and one
stream; refuses an engine built for another GPU or TensorRT version (facts kept in the `<engine>.json`
sidecar written by export.engine). tensorrt and cuda-python are imported only when an engine is used."""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from runtime.backends.base import InputSpec, Runner
from runtime.errors import BackendUnavailable, InputError, PSPError
from runtime.files import atomic_output, require_file
from runtime.metadata import INPUT_NAME, ModelInfo
from runtime.model_info import engine_sidecar

SIDECAR_FORMAT = 1
TENSORRT_INSTALL = ("TensorRT is not installed: `pip install tensorrt` (or `pip install 'pspnet-deploy[tensorrt]'`); "
                    "it needs an NVIDIA GPU with a recent driver")
CUDA_INSTALL = ("cuda-python is not installed: `pip install cuda-python` (or `pip install 'pspnet-deploy[gpu]'`); "
                "it needs an NVIDIA GPU with a recent driver")


def import_tensorrt():
    """The tensorrt module, or BackendUnavailable saying how to install it."""
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailable(TENSORRT_INSTALL) from None
    return tensorrt


def import_cudart():
    """cuda-python's runtime API (the cuda-python 12.x/13 import path; the old `from cuda import cudart` is
    gone in 13)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise BackendUnavailable(CUDA_INSTALL) from None
    return cudart


def cuda_check(result, what: str):
    """Unpack a cuda-python call's (error, *values) tuple; a failure becomes a PSPError naming the call."""
    cudart = import_cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, text = cudart.cudaGetErrorString(err)
        raise PSPError(f"CUDA {what} failed: {text.decode() if isinstance(text, bytes) else text}")
    return values[0] if len(values) == 1 else tuple(values) if values else None


@dataclass(frozen=True)
class Platform:
    """What an engine is tied to: the TensorRT version and the GPU model that built it."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.9"


def current_platform(device: int = 0) -> Platform:
    """This machine's TensorRT version and the GPU `device` (name and compute capability, via cuda-python)."""
    trt = import_tensorrt()
    cudart = import_cudart()
    props = cuda_check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.split(b"\0")[0].decode() if isinstance(props.name, bytes) else str(props.name)
    return Platform(trt.__version__, name.strip(), f"{props.major}.{props.minor}")


def _release(version: str) -> str:
    # Engines are portable across TensorRT builds of one release (major.minor.patch), not across releases.
    return ".".join(version.split(".")[:3])


@dataclass
class EngineSidecar:
    """`<engine>.json`: how and where an engine was built, and the ModelInfo of the model inside it.
    `profiles` maps input name -> {"min": shape, "opt": shape, "max": shape}."""

    platform: Platform
    precision: str
    profiles: dict[str, dict[str, list[int]]]
    onnx_sha256: str
    engine_sha256: str
    info: ModelInfo
    created: str = ""
    build: dict = field(default_factory=dict)  # workspace, timing cache, conversion notes
    format: int = SIDECAR_FORMAT

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("platform")
        return {"format": self.format, **asdict(self.platform), **{k: v for k, v in data.items() if k != "format"},
                "info": self.info.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "EngineSidecar":
        platform = Platform(str(data["tensorrt_version"]), str(data["gpu_name"]), str(data["compute_capability"]))
        return cls(platform=platform, precision=str(data["precision"]), profiles=dict(data["profiles"]),
                   onnx_sha256=str(data.get("onnx_sha256", "")), engine_sha256=str(data.get("engine_sha256", "")),
                   info=ModelInfo.from_dict(data["info"]), created=str(data.get("created", "")),
                   build=dict(data.get("build", {})), format=int(data.get("format", SIDECAR_FORMAT)))


def write_sidecar(path: str | os.PathLike, sidecar: EngineSidecar) -> Path:
    """Write the sidecar JSON to `path` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(sidecar.to_dict(), indent=2) + "\n")
    return Path(path)


def read_sidecar(engine_path: str | os.PathLike) -> EngineSidecar:
    """The sidecar of an engine, or an InputError saying it is missing or malformed."""
    path = engine_sidecar(engine_path)
    if not path.exists():
        raise InputError(f"{engine_path}: no sidecar {path.name} beside the engine; build engines with "
                         "psp-build-engine, which records the GPU, TensorRT version and model metadata there")
    try:
        return EngineSidecar.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a valid engine sidecar ({type(exc).__name__}: {exc})") from None


def check_compatible(built: Platform, running: Platform, engine_name: str = "engine") -> None:
    """Refuse (InputError) an engine built with another TensorRT release or for another GPU model."""
    problems = []
    if _release(built.tensorrt_version) != _release(running.tensorrt_version):
        problems.append(f"TensorRT {built.tensorrt_version}, this machine has {running.tensorrt_version}")
    if built.compute_capability != running.compute_capability or built.gpu_name != running.gpu_name:
        problems.append(f"GPU {built.gpu_name} (sm {built.compute_capability}), this machine has "
                        f"{running.gpu_name} (sm {running.compute_capability})")
    if problems:
        raise InputError(f"{engine_name} was built for {'; and for '.join(problems)}. TensorRT engines only run "
                         "where they were built: rebuild it here with psp-build-engine from the ONNX model")


def trt_to_numpy(trt, dtype) -> np.dtype:
    """numpy dtype of a TensorRT DataType (by name: stable across TensorRT 10 and 11)."""
    names = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
             "BOOL": np.bool_, "UINT8": np.uint8}
    for name, np_type in names.items():
        if getattr(trt.DataType, name, None) == dtype:
            return np.dtype(np_type)
    raise InputError(f"engine tensor type {dtype} has no numpy equivalent")


@dataclass
class _Buffer:
    """One I/O tensor's pinned host and device memory, reused across calls; grown only when a shape grows."""

    dtype: np.dtype
    capacity: int = 0  # bytes
    device: int = 0
    host: int = 0

    def ensure(self, nbytes: int) -> bool:
        """Make room for nbytes; True when the addresses changed."""
        if nbytes <= self.capacity:
            return False
        self.free()
        cudart = import_cudart()
        self.device = cuda_check(cudart.cudaMalloc(nbytes), "cudaMalloc")
        self.host = cuda_check(cudart.cudaHostAlloc(nbytes, cudart.cudaHostAllocDefault), "cudaHostAlloc")
        self.capacity = nbytes
        return True

    def host_array(self, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape))
        raw = (ctypes.c_byte * (count * self.dtype.itemsize)).from_address(self.host)
        return np.frombuffer(raw, dtype=self.dtype, count=count).reshape(shape)

    def free(self) -> None:
        if self.capacity:
            cudart = import_cudart()
            cudart.cudaFree(self.device)
            cudart.cudaFreeHost(self.host)
            self.capacity = self.device = self.host = 0


def _engine_input_spec(sidecar: EngineSidecar) -> InputSpec:
    profile = sidecar.profiles.get(INPUT_NAME) or next(iter(sidecar.profiles.values()), None)
    if not profile:
        return InputSpec(size=sidecar.info.input_size)
    lo, hi = profile["min"], profile["max"]
    size = tuple(lo[2:]) if lo[2:] == hi[2:] else None
    fixed = lo[0] if lo[0] == hi[0] else None
    return InputSpec(size=size, min_batch=lo[0], max_batch=hi[0], fixed_batch=fixed)


def collecting_logger(trt, min_severity=None):
    """A TensorRT ILogger that keeps every message at or above `min_severity` (default WARNING), so a failed
    build or load can show TensorRT's own explanation instead of a bare None."""

    class CollectingLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.min_severity = trt.ILogger.Severity.WARNING if min_severity is None else min_severity
            self.messages: list[tuple[str, str]] = []

        def log(self, severity, msg):
            if int(severity) <= int(self.min_severity):  # lower value = more severe
                self.messages.append((getattr(severity, "name", str(severity)), str(msg)))

        def text(self, last: int = 20) -> str:
            return "\n".join(f"  [{sev}] {msg}" for sev, msg in self.messages[-last:])

    return CollectingLogger()


class TensorRTRunner(Runner):
    """Options: device (GPU index), cuda_graph (capture the engine's launch once per input shape and replay
    it: saves the per-layer launch overhead for fixed-shape streams). Fills last_timing h2d/compute/d2h from
    CUDA events."""

    name = "tensorrt"

    def __init__(self, model_path, *, device: int = 0, cuda_graph: bool = False):
        path = require_file(model_path, "TensorRT engine")
        self.sidecar = read_sidecar(path)
        super().__init__(str(path), info=self.sidecar.info)
        self.input_spec = _engine_input_spec(self.sidecar)
        self.device = int(device)
        self.cuda_graph = bool(cuda_graph)
        self.platform = current_platform(self.device)
        check_compatible(self.sidecar.platform, self.platform, path.name)
        self._context = None
        self.activate()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            import_tensorrt()
            cudart = import_cudart()
        except BackendUnavailable as exc:
            return str(exc)
        err, count = cudart.cudaGetDeviceCount()
        if err != cudart.cudaError_t.cudaSuccess or count < 1:
            return "no CUDA GPU is visible (no NVIDIA driver or device)"
        return None

    def activate(self) -> None:
        if self._context is None:
            self._load()
        super().activate()

    def _load(self) -> None:
        trt, cudart = import_tensorrt(), import_cudart()
        cuda_check(cudart.cudaSetDevice(self.device), "cudaSetDevice")
        data = Path(self.model_path).read_bytes()
        if self.sidecar.engine_sha256 and hashlib.sha256(data).hexdigest() != self.sidecar.engine_sha256:
            raise InputError(f"{self.model_path}: the engine does not match its sidecar (sha256 differs); "
                             "it was replaced or truncated: rebuild it with psp-build-engine")
        self._logger = collecting_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise PSPError(f"TensorRT could not load {self.model_path}:\n{self._logger.text()}")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise InputError(f"{self.model_path}: expected one image input and one output, found inputs "
                             f"{inputs} and outputs {outputs}")
        self._engine, (self._input,), (self._output,) = engine, inputs, outputs
        self._context = engine.create_execution_context()
        self._bounds = [tuple(s) for s in engine.get_tensor_profile_shape(self._input, 0)]  # min, opt, max
        self._buffers = {n: _Buffer(trt_to_numpy(trt, engine.get_tensor_dtype(n))) for n in names}
        self._stream = cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._events = [cuda_check(cudart.cudaEventCreate(), "cudaEventCreate") for _ in range(4)]
        self._shape = self._out_shape = self._graph = None

    def deactivate(self) -> None:
        if self._context is not None:
            cudart = import_cudart()
            self._drop_graph()
            cudart.cudaStreamSynchronize(self._stream)
            for buffer in self._buffers.values():
                buffer.free()
            for event in self._events:
                cudart.cudaEventDestroy(event)
            cudart.cudaStreamDestroy(self._stream)
            self._context = self._engine = self._runtime = None
        super().deactivate()

    def _check(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise InputError(f"expected a batch [N, 3, H, W], got shape {batch.shape}")
        lo, hi = self._bounds[0], self._bounds[2]
        if not all(a <= b <= c for a, b, c in zip(lo[2:], batch.shape[2:], hi[2:])):
            raise InputError(f"{Path(self.model_path).name} takes inputs from {lo[2]}x{lo[3]} to {hi[2]}x{hi[3]} "
                             f"(its build profile), got {batch.shape[2]}x{batch.shape[3]}")
        return np.ascontiguousarray(batch, dtype=self._buffers[self._input].dtype)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.activate()
        batch = self._check(batch)
        lo, hi = self._bounds[0][0], self._bounds[2][0]
        parts, total = [], [0.0, 0.0, 0.0]
        for i in range(0, len(batch), hi):  # larger batches than the profile allows run in chunks
            chunk = batch[i:i + hi]
            pad = max(0, lo - len(chunk))
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            out, times = self._run(chunk)
            parts.append(out[:len(chunk) - pad])
            total = [a + b for a, b in zip(total, times)]
        self.last_timing.h2d_ms, self.last_timing.compute_ms, self.last_timing.d2h_ms = total
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        if not self._context.set_input_shape(self._input, shape):
            raise InputError(f"TensorRT rejected input shape {shape}:\n{self._logger.text(5)}")
        out_shape = tuple(self._context.get_tensor_shape(self._output))
        for name, dims in ((self._input, shape), (self._output, out_shape)):
            buffer = self._buffers[name]
            buffer.ensure(int(np.prod(dims)) * buffer.dtype.itemsize)
            self._context.set_tensor_address(name, buffer.device)
        self._drop_graph()  # a captured graph holds the old shapes and addresses
        self._shape, self._out_shape = shape, out_shape

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, list[float]]:
        cudart = import_cudart()
        if batch.shape != self._shape:
            self._set_shape(batch.shape)
        src, dst = self._buffers[self._input], self._buffers[self._output]
        np.copyto(src.host_array(batch.shape), batch)  # into pinned memory: the copy below is truly async
        out_bytes = int(np.prod(self._out_shape)) * dst.dtype.itemsize
        stream, ev = self._stream, self._events
        cuda_check(cudart.cudaEventRecord(ev[0], stream), "cudaEventRecord")
        cuda_check(cudart.cudaMemcpyAsync(src.device, src.host, batch.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream), "copy to GPU")
        cuda_check(cudart.cudaEventRecord(ev[1], stream), "cudaEventRecord")
        self._execute()
        cuda_check(cudart.cudaEventRecord(ev[2], stream), "cudaEventRecord")
        cuda_check(cudart.cudaMemcpyAsync(dst.host, dst.device, out_bytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream), "copy from GPU")
        cuda_check(cudart.cudaEventRecord(ev[3], stream), "cudaEventRecord")
        cuda_check(cudart.cudaStreamSynchronize(stream), "inference")
        times = [cuda_check(cudart.cudaEventElapsedTime(a, b), "cudaEventElapsedTime")
                 for a, b in zip(ev, ev[1:])]
        return dst.host_array(self._out_shape).copy(), times  # copy: the pinned buffer is reused next call

    def _execute(self) -> None:
        if self.cuda_graph and self._graph is None:
            self._graph = self._capture()
        if self._graph is not None:
            cuda_check(import_cudart().cudaGraphLaunch(self._graph, self._stream), "cudaGraphLaunch")
        elif not self._context.execute_async_v3(int(self._stream)):
            raise PSPError(f"TensorRT inference failed:\n{self._logger.text(5)}")

    def _capture(self):
        """Record one launch of the engine as a CUDA graph; None (and a note) when the engine cannot be
        captured, after which the runner launches it directly."""
        cudart = import_cudart()
        stream = self._stream
        # The first launch after a shape change does one-off setup that must not end up in the graph.
        if not self._context.execute_async_v3(int(stream)):
            raise PSPError(f"TensorRT inference failed:\n{self._logger.text(5)}")
        cuda_check(cudart.cudaStreamSynchronize(stream), "inference")
        cuda_check(cudart.cudaStreamBeginCapture(
            stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture")
        launched = self._context.execute_async_v3(int(stream))
        err, graph = cudart.cudaStreamEndCapture(stream)
        if not launched or err != cudart.cudaError_t.cudaSuccess:
            self.cuda_graph = False
            self.notes.append("this engine cannot be captured as a CUDA graph; launching it directly")
            return None
        graph_exec = cuda_check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        cudart.cudaGraphDestroy(graph)
        return graph_exec

    def _drop_graph(self) -> None:
        if self._graph is not None:
            import_cudart().cudaGraphExecDestroy(self._graph)
            self._graph = None

    def describe(self) -> str:
        graph = ", CUDA graph" if self.cuda_graph else ""
        return f"{self.name} {self.platform.tensorrt_version} on {self.platform.gpu_name} ({self.info.precision}{graph})"
