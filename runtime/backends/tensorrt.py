"""TensorRT backend: runs a serialized engine with cuda-python device buffers, pinned host buffers and one
stream; refuses an engine built for another GPU or TensorRT version (facts kept in the `<engine>.json`
sidecar written by export.engine.build). tensorrt and cuda-python are imported only when an engine is used."""
from __future__ import annotations

import ctypes
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pspcore.engine_file import (ENGINE_SUFFIXES, EngineSidecar, Platform, check_compatible, current_platform,
                                 read_sidecar)
from pspcore.device import cuda_index
from pspcore.errors import BackendUnavailable, InputError, PSPError
from pspcore.files import require_file, suffix_of
from pspcore.model_info import INPUT_NAME
from pspcore.options import BackendOptions, option
from pspcore.nvidia import (collecting_logger, cuda_check, cuda_unavailable_reason, import_cudart, import_tensorrt,
                            select_device, tensorrt_driver_reason)
from pspcore.runner import InputSpec, Runner
from pspcore.tensor_types import TENSORRT_TO_NUMPY


def trt_to_numpy(trt, dtype) -> np.dtype:
    """numpy dtype of a TensorRT DataType (by name: stable across TensorRT 10 and 11)."""
    for name, np_type in TENSORRT_TO_NUMPY.items():
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
        """Make room for nbytes; True when the addresses changed. On failure the buffer holds nothing (a
        device buffer already obtained is freed again), so no stale address survives."""
        if nbytes <= self.capacity:
            return False
        self.free()
        cudart = import_cudart()
        self.device = cuda_check(cudart.cudaMalloc(nbytes), "cudaMalloc")
        try:
            self.host = cuda_check(cudart.cudaHostAlloc(nbytes, cudart.cudaHostAllocDefault), "cudaHostAlloc")
        except PSPError:
            cudart.cudaFree(self.device)
            self.device = 0
            raise
        self.capacity = nbytes
        return True

    def host_array(self, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape))
        if count * self.dtype.itemsize > self.capacity:  # writing past it (or through 0) would crash Python
            raise PSPError(f"internal error: a {self.capacity}-byte buffer cannot hold {shape}")
        raw = (ctypes.c_byte * (count * self.dtype.itemsize)).from_address(self.host)
        return np.frombuffer(raw, dtype=self.dtype, count=count).reshape(shape)

    def free(self) -> None:
        if self.capacity:
            cudart = import_cudart()
            cudart.cudaFree(self.device)
            cudart.cudaFreeHost(self.host)
            self.capacity = self.device = self.host = 0


def _profile_spec(bounds) -> InputSpec:
    """The InputSpec of an optimisation profile's (min, opt, max) input shapes [N, 3, H, W]."""
    lo, hi = tuple(bounds[0]), tuple(bounds[-1])
    size = tuple(lo[2:]) if lo[2:] == hi[2:] else None
    fixed = lo[0] if lo[0] == hi[0] else None
    return InputSpec(size=size, min_batch=lo[0], max_batch=hi[0], fixed_batch=fixed,
                     min_size=None if size else tuple(lo[2:]), max_size=None if size else tuple(hi[2:]))


def _engine_input_spec(sidecar: EngineSidecar) -> InputSpec:
    profile = sidecar.profiles.get(INPUT_NAME) or next(iter(sidecar.profiles.values()), None)
    if not profile:
        return InputSpec(size=sidecar.info.input_size)
    return _profile_spec((profile["min"], profile["max"]))


@dataclass(frozen=True)
class TensorRTOptions(BackendOptions):
    """What the tensorrt backend takes."""

    device: int = option(0, "the GPU index (set by --device cuda:N)")
    cuda_graphs: bool = option(False, "replay the engine's launch as a CUDA graph captured once per input shape "
                                      "(saves the per-layer launch overhead)", cli=True)

    @classmethod
    def from_device(cls, device: str) -> dict:
        if device == "cpu":
            raise InputError("backend tensorrt runs on a CUDA GPU only: --device cuda or cuda:N")
        index = cuda_index(device)
        return {} if index is None else {"device": index}


class TensorRTRunner(Runner):
    """Runs a serialized engine (options: TensorRTOptions; with cuda_graphs a shape that cannot be captured
    runs directly). Fills last_timing h2d/compute/d2h from CUDA events. `activate()` checks the engine against
    this machine and loads it; `deactivate()` frees every buffer, graph, event, stream, context and the engine."""

    name = "tensorrt"
    options_class = TensorRTOptions
    requires = ("tensorrt", "cuda")
    timed_by_wall = False  # CUDA events split each call into copy in, compute and copy out

    @classmethod
    def auto_priority(cls, model_path: str) -> int | None:
        return 100 if suffix_of(model_path) in ENGINE_SUFFIXES else None

    def __init__(self, model_path, **options):
        o = self.options_class.parse(self.name, options)
        path = require_file(model_path, "TensorRT engine")
        super().__init__(str(path))
        self.device = int(o.device)
        self.cuda_graph = bool(o.cuda_graphs)
        self.platform: Platform | None = None
        self.graph_launches = 0  # replays of a captured graph (0: every launch ran directly)
        self._uncapturable: set[tuple[int, ...]] = set()  # shapes whose capture failed: launched directly
        self._reset()

    def _reset(self) -> None:
        self._runtime = self._engine = self._context = self._logger = None
        self._stream = None
        self._events: list = []
        self._buffers: dict[str, _Buffer] = {}
        self._graph = None  # the graph exec of the current shape
        self._shape = self._out_shape = None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        try:
            trt = import_tensorrt()
        except BackendUnavailable as exc:
            return str(exc)
        return cuda_unavailable_reason() or tensorrt_driver_reason(trt.__version__)

    def load(self) -> None:
        try:
            self._load()
        except BaseException:
            self._release()  # a half-loaded runner keeps nothing
            raise

    def _load(self) -> None:
        sidecar = read_sidecar(self.model_path)
        self.info = sidecar.info
        self.input_spec = _engine_input_spec(sidecar)
        trt, cudart = import_tensorrt(), import_cudart()
        self.platform = current_platform(self.device)
        check_compatible(sidecar.platform, self.platform, Path(self.model_path).name)
        select_device(self.device)
        data = Path(self.model_path).read_bytes()
        if sidecar.engine_sha256 and hashlib.sha256(data).hexdigest() != sidecar.engine_sha256:
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
        self.input_spec = _profile_spec([tuple(s) for s in engine.get_tensor_profile_shape(self._input, 0)])
        self._buffers = {n: _Buffer(trt_to_numpy(trt, engine.get_tensor_dtype(n))) for n in names}
        # Non-blocking: no implicit ordering against the legacy default stream that other libraries use.
        self._stream = cuda_check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                                  "cudaStreamCreateWithFlags")
        for _ in range(4):
            self._events.append(cuda_check(cudart.cudaEventCreate(), "cudaEventCreate"))

    def release(self) -> None:
        self._release()

    def _release(self) -> None:
        """Free whatever is held, in dependency order (work finished, graph, memory, events, stream, then the
        TensorRT objects); safe to call twice or after a failed load."""
        if self._stream is not None or self._buffers or self._events:
            cudart = import_cudart()
            select_device(self.device)  # frees and destroys act on the current device
            self._drop_graph()
            if self._stream is not None:
                cudart.cudaStreamSynchronize(self._stream)
            for buffer in self._buffers.values():
                buffer.free()
            for event in self._events:
                cudart.cudaEventDestroy(event)
            if self._stream is not None:
                cudart.cudaStreamDestroy(self._stream)
        # TensorRT objects go in reverse order of creation: context, engine, runtime.
        self._context = None
        self._engine = None
        self._runtime = None
        self._reset()

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        # Another runner in this thread may have made its own GPU current since: buffers allocated and the
        # launch below must be on this runner's device.
        select_device(self.device)
        out, (h2d, compute, d2h) = self._run(batch)
        self.last_timing.add(h2d, compute, d2h)
        return out

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        # Forget the old shape first: if anything below fails, the next call starts again from scratch
        # instead of launching with addresses that were freed or never set.
        self._drop_graph()  # a captured graph holds the old shapes and addresses
        self._shape = self._out_shape = None
        if not self._context.set_input_shape(self._input, shape):
            raise InputError(f"TensorRT rejected input shape {shape}:\n{self._logger.text(5)}")
        out_shape = tuple(self._context.get_tensor_shape(self._output))
        for name, dims in ((self._input, shape), (self._output, out_shape)):
            buffer = self._buffers[name]
            buffer.ensure(int(np.prod(dims)) * buffer.dtype.itemsize)
            if not self._context.set_tensor_address(name, buffer.device):
                raise PSPError(f"TensorRT refused the address of {name}:\n{self._logger.text(5)}")
        self._shape, self._out_shape = shape, out_shape

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, list[float]]:
        cudart = import_cudart()
        if batch.shape != self._shape:
            self._set_shape(batch.shape)
        src, dst = self._buffers[self._input], self._buffers[self._output]
        staged = src.host_array(batch.shape)
        np.copyto(staged, batch)  # into pinned memory (cast to the engine's input type): the copy is truly async
        out_bytes = int(np.prod(self._out_shape)) * dst.dtype.itemsize
        stream, ev = self._stream, self._events
        cuda_check(cudart.cudaEventRecord(ev[0], stream), "cudaEventRecord")
        cuda_check(cudart.cudaMemcpyAsync(src.device, src.host, staged.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream), "copy to GPU")
        cuda_check(cudart.cudaEventRecord(ev[1], stream), "cudaEventRecord")
        self._execute()
        cuda_check(cudart.cudaEventRecord(ev[2], stream), "cudaEventRecord")
        cuda_check(cudart.cudaMemcpyAsync(dst.host, dst.device, out_bytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream), "copy from GPU")
        cuda_check(cudart.cudaEventRecord(ev[3], stream), "cudaEventRecord")
        cuda_check(cudart.cudaStreamSynchronize(stream), "inference")
        times = [cuda_check(cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime")
                 for start, end in zip(ev, ev[1:])]
        return dst.host_array(self._out_shape).copy(), times  # copy: the pinned buffer is reused next call

    def _execute(self) -> None:
        if self.cuda_graph and self._graph is None and self._shape not in self._uncapturable:
            self._graph = self._capture()
        if self._graph is not None:
            cuda_check(import_cudart().cudaGraphLaunch(self._graph, self._stream), "cudaGraphLaunch")
            self.graph_launches += 1
        elif not self._context.execute_async_v3(int(self._stream)):
            raise PSPError(f"TensorRT inference failed:\n{self._logger.text(5)}")

    def _capture(self):
        """Record one launch of the engine as a CUDA graph and instantiate it; None when this shape cannot be
        captured (a note says so once), after which this shape is launched directly, without new attempts."""
        cudart = import_cudart()
        stream = self._stream
        # The first launch after a shape change does one-off setup that must not end up in the graph.
        if not self._context.execute_async_v3(int(stream)):
            raise PSPError(f"TensorRT inference failed:\n{self._logger.text(5)}")
        cuda_check(cudart.cudaStreamSynchronize(stream), "inference")
        err, = cudart.cudaStreamBeginCapture(stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
        graph_exec, why = None, None
        if err != cudart.cudaError_t.cudaSuccess:
            why = f"cudaStreamBeginCapture failed ({getattr(err, 'name', err)})"
        else:
            launched = self._context.execute_async_v3(int(stream))
            err, graph = cudart.cudaStreamEndCapture(stream)  # ends the capture whatever happened inside it
            if err != cudart.cudaError_t.cudaSuccess:
                why = f"stream capture failed ({getattr(err, 'name', err)})"
            else:
                if not launched:
                    why = "TensorRT refused to launch inside a stream capture"
                else:
                    err, graph_exec = cudart.cudaGraphInstantiate(graph, 0)
                    if err != cudart.cudaError_t.cudaSuccess:
                        why, graph_exec = f"cudaGraphInstantiate failed ({getattr(err, 'name', err)})", None
                cudart.cudaGraphDestroy(graph)  # an instantiated exec keeps its own copy
        if graph_exec is None:
            # A failed capture leaves its error as the thread's last CUDA error, which TensorRT's next launch
            # would report as its own failure: clear it, as trtexec does (sampleInference.cpp).
            cudart.cudaGetLastError()
            self._uncapturable.add(self._shape)
            note = f"input shape {self._shape} cannot be replayed as a CUDA graph ({why}); launching it directly"
            if note not in self.notes:
                self.notes.append(note)
        return graph_exec

    def _drop_graph(self) -> None:
        if self._graph is not None:
            import_cudart().cudaGraphExecDestroy(self._graph)
            self._graph = None

    @property
    def processor(self) -> str:
        return "gpu"

    def describe(self) -> str:
        graph = ", CUDA graph" if self.cuda_graph else ""
        where = (f"{self.platform.tensorrt_version} on {self.platform.gpu_name}" if self.platform
                 else f"on GPU {self.device}")
        return f"{self.name} {where} ({self.info.precision}{graph})"
