"""Stand-ins for cuda-python's runtime API and TensorRT's runtime API, enough to run TensorRTRunner on a CPU.

Memory is modelled per GPU: host buffers are real (the runner writes numpy arrays into them through ctypes),
device buffers are bytearrays tagged with the GPU that was current when they were allocated. An execution
context remembers its GPU and refuses to launch (returns False, like TensorRT) when the current GPU or any bound
buffer is another one: the bug where a runner allocates or launches on whatever GPU another runner left current.
The engine computes logits [N, 2, H, W] = (x[:, 0], -x[:, 0]) so results can be checked."""
from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np


class Error(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


@dataclass
class FakeCudart:
    devices: int = 2
    count_error: Error = Error.cudaSuccess
    current: int = 0
    device_memory: dict = field(default_factory=dict)  # address -> (gpu, bytearray)
    host_memory: dict = field(default_factory=dict)  # address -> ctypes buffer (kept alive)
    graphs_created: int = 0
    graphs_destroyed: int = 0
    capture_fails: bool = False  # a launch inside stream capture returns False
    capturing: bool = False
    next_address: int = 1 << 40

    cudaError_t = Error
    cudaHostAllocDefault = 0
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

    def cudaGetErrorString(self, err):
        return Error.cudaSuccess, Error(err).name.encode()

    def cudaGetDeviceCount(self):
        return self.count_error, self.devices if self.count_error == Error.cudaSuccess else 0

    def cudaSetDevice(self, device):
        if not 0 <= device < self.devices:
            return (Error.cudaErrorInvalidValue,)
        self.current = device
        return (Error.cudaSuccess,)

    def cudaMalloc(self, nbytes):
        self.next_address += 1 << 20
        self.device_memory[self.next_address] = (self.current, bytearray(nbytes))
        return Error.cudaSuccess, self.next_address

    def cudaHostAlloc(self, nbytes, flags):
        buffer = ctypes.create_string_buffer(nbytes)
        self.host_memory[ctypes.addressof(buffer)] = buffer
        return Error.cudaSuccess, ctypes.addressof(buffer)

    def cudaFree(self, address):
        gpu, _ = self.device_memory.pop(address)
        assert gpu == self.current, "device memory freed while another GPU is current"
        return (Error.cudaSuccess,)

    def cudaFreeHost(self, address):
        self.host_memory.pop(address)
        return (Error.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            self.device_memory[dst][1][:nbytes] = ctypes.string_at(src, nbytes)
        else:
            ctypes.memmove(dst, bytes(self.device_memory[src][1][:nbytes]), nbytes)
        return (Error.cudaSuccess,)

    def cudaStreamCreate(self):
        return Error.cudaSuccess, 7

    def cudaStreamDestroy(self, stream):
        return (Error.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):
        return (Error.cudaSuccess,)

    def cudaEventCreate(self):
        return Error.cudaSuccess, object()

    def cudaEventDestroy(self, event):
        return (Error.cudaSuccess,)

    def cudaEventRecord(self, event, stream):
        return (Error.cudaSuccess,)

    def cudaEventElapsedTime(self, start, end):
        return Error.cudaSuccess, 0.25

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing = True
        return (Error.cudaSuccess,)

    def cudaStreamEndCapture(self, stream):
        self.capturing = False
        self.graphs_created += 1
        return Error.cudaSuccess, ("graph", self.graphs_created)

    def cudaGraphInstantiate(self, graph, flags):
        return Error.cudaSuccess, ("exec", graph)

    def cudaGraphDestroy(self, graph):
        self.graphs_destroyed += 1
        return (Error.cudaSuccess,)

    def cudaGraphExecDestroy(self, graph_exec):
        return (Error.cudaSuccess,)

    def cudaGraphLaunch(self, graph_exec, stream):
        return (Error.cudaSuccess,)

    def cudaGetDeviceProperties(self, device):
        return Error.cudaSuccess, SimpleNamespace(name=b"NVIDIA L4\0", major=8, minor=9)


class FakeTensorRT:
    """tensorrt's runtime slice: Runtime -> engine (image -> logits, profile batch 1..4, 65x65) -> context."""

    __version__ = "10.13.3.9"
    TensorIOMode = SimpleNamespace(INPUT=0, OUTPUT=1)
    DataType = SimpleNamespace(FLOAT=0, HALF=1)

    class ILogger:
        Severity = enum.IntEnum("Severity", "INTERNAL_ERROR ERROR WARNING INFO VERBOSE", start=0)

        def __init__(self):
            pass

    def __init__(self, cudart: FakeCudart, size=(65, 65), batches=(1, 4)):
        self.cudart, self.size, self.batches = cudart, size, batches
        fake = self

        class Context:
            def __init__(self):
                self.gpu = fake.cudart.current
                self.shape, self.addresses = None, {}

            def set_input_shape(self, name, shape):
                self.shape = tuple(shape)
                return True

            def get_tensor_shape(self, name):
                n, _, h, w = self.shape
                return (n, 2, h, w) if name == "logits" else self.shape

            def set_tensor_address(self, name, address):
                self.addresses[name] = address

            def execute_async_v3(self, stream):
                memory = fake.cudart.device_memory
                if fake.cudart.capturing and fake.cudart.capture_fails:
                    return False
                if fake.cudart.current != self.gpu or any(memory[a][0] != self.gpu for a in self.addresses.values()):
                    return False  # another GPU's pointers or stream: TensorRT fails the launch
                x = np.frombuffer(memory[self.addresses["image"]][1], np.float32)[:int(np.prod(self.shape))]
                x = x.reshape(self.shape)
                out = np.concatenate([x[:, :1], -x[:, :1]], axis=1).astype(np.float32)
                memory[self.addresses["logits"]][1][:out.nbytes] = out.tobytes()
                return True

        class Engine:
            num_io_tensors = 2

            def get_tensor_name(self, i):
                return ("image", "logits")[i]

            def get_tensor_mode(self, name):
                return fake.TensorIOMode.INPUT if name == "image" else fake.TensorIOMode.OUTPUT

            def get_tensor_dtype(self, name):
                return fake.DataType.FLOAT

            def get_tensor_profile_shape(self, name, profile):
                (lo, hi), (h, w) = fake.batches, fake.size
                return [(lo, 3, h, w), (hi, 3, h, w), (hi, 3, h, w)]

            def create_execution_context(self):
                return Context()

        class Runtime:
            def __init__(self, logger):
                self.logger = logger

            def deserialize_cuda_engine(self, data):
                return Engine() if data.startswith(b"engine") else None

        self.Runtime = Runtime
