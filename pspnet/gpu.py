"""The torch runner's GPU machinery: strict FP32 (TF32 off) through the API the installed torch has, CUDA graphs
kept per input shape in one memory pool and captured on the runner's own device and stream, and page-locked
host buffers for the copies to and from the GPU."""
from __future__ import annotations

import contextlib
import math

import numpy as np

MAX_GRAPHS = 8  # input shapes captured per runner; further shapes run eagerly (each graph keeps its output alive)
WARMUPS = 3  # eager runs before a capture, as torch.cuda.make_graphed_callables does


def cuda_api():
    """torch.cuda (a test puts a two-device stand-in here)."""
    import torch

    return torch.cuda


# ------------------------------------------------------------------------------------------ strict FP32

NEW_TF32_API = "fp32_precision"  # torch >= 2.9
LEGACY_TF32_API = "allow_tf32"


def tf32_api(backends=None) -> str:
    """Which TF32 switches the installed torch has: the per-backend `fp32_precision` (torch 2.9+) or the legacy
    `allow_tf32` flags. Once the new API is used, reading a legacy flag raises (Context.cpp: "a mix of the legacy
    and new APIs"), and setting a legacy flag is overruled by a per-operator `fp32_precision`: never mix them."""
    if backends is None:
        import torch

        backends = torch.backends
    has_new = hasattr(backends.cuda.matmul, "fp32_precision") and hasattr(getattr(backends.cudnn, "conv", None),
                                                                          "fp32_precision")
    return NEW_TF32_API if has_new else LEGACY_TF32_API


def _tf32_switches(backends, api: str, tf32: bool) -> list[tuple[object, str, object]]:
    if api == NEW_TF32_API:
        # cuDNN convolutions default to "tf32" (not "none"), so the conv switch must be set, not only the global.
        value = "tf32" if tf32 else "ieee"
        return [(backends.cuda.matmul, "fp32_precision", value), (backends.cudnn.conv, "fp32_precision", value)]
    return [(backends.cuda.matmul, "allow_tf32", tf32), (backends.cudnn, "allow_tf32", tf32)]


def describe_tf32_off(api: str) -> str:
    """What strict_fp32 sets, for reports."""
    if api == NEW_TF32_API:
        return "TF32 off: torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = 'ieee'"
    return "TF32 off: torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False (legacy API)"


@contextlib.contextmanager
def tf32_mode(tf32: bool, backends=None):
    """TF32 on or off for cuBLAS matmuls and cuDNN convolutions while the block runs, through one API only
    (tf32_api); the previous settings come back after. Yields the API used."""
    if backends is None:
        import torch

        backends = torch.backends
    api = tf32_api(backends)
    switches = _tf32_switches(backends, api, tf32)
    saved = [getattr(owner, name) for owner, name, _ in switches]
    try:
        for owner, name, value in switches:
            setattr(owner, name, value)
        yield api
    finally:
        for (owner, name, _), value in zip(switches, saved):
            setattr(owner, name, value)


def strict_fp32(backends=None):
    """IEEE FP32 while the block runs: cuDNN runs FP32 convolutions in TF32 (10 mantissa bits) by default."""
    return tf32_mode(False, backends)


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool):
    """cuDNN's kernel search on or off while the block runs: worth its one-off cost for a shape that repeats."""
    import torch

    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


# ------------------------------------------------------------------------------------------- CUDA graphs

class CudaGraph:
    """One input shape's forward captured as a CUDA graph (torch.cuda.CUDAGraph). Calling it copies the batch
    into the graph's static input and replays; the result lives in the static output, overwritten by the next
    replay of any graph of the same pool."""

    @staticmethod
    def supports(device) -> bool:
        return device.type == "cuda"

    @staticmethod
    def resources(device) -> tuple:
        """(capture stream, memory pool) that every graph of one runner shares, made on `device`."""
        cuda = cuda_api()
        with cuda.device(device):
            return cuda.Stream(device=device), cuda.graph_pool_handle()

    def __init__(self, forward, example, stream, pool):
        cuda = cuda_api()
        device = stream.device  # the runner's GPU (resources)
        with cuda.device(device):
            self.static_input = example.clone()
            # Warm up on the capture stream itself: cuDNN picks its kernels, cuBLAS makes its per-stream
            # workspace and the allocator fills up outside the capture.
            stream.wait_stream(cuda.current_stream(device))
            with cuda.stream(stream):
                for _ in range(WARMUPS):
                    forward(self.static_input)
            cuda.current_stream(device).wait_stream(stream)
            self.graph = cuda.CUDAGraph()
            # An explicit stream of this device: without one, torch.cuda.graph captures on a process-wide stream
            # made on whichever device was current at its first use, and work on this device then runs eagerly
            # instead of being recorded: every replay returns the capture's output (pytorch issue 87894).
            with cuda.graph(self.graph, pool=pool, stream=stream):
                self.static_output = forward(self.static_input)

    def __call__(self, batch):
        self.static_input.copy_(batch)
        self.graph.replay()
        return self.static_output


class CudaGraphs:
    """A runner's captured forwards, one per input shape and at most `limit` (past it, new shapes run
    eagerly): a shape seen again replays its own graph instead of being captured anew (psp-eval's whole
    images, the last partial batch and psp-bench's batch list change shapes). All share one memory pool and one
    capture stream: they replay one at a time on one stream and each output is copied out before the next
    replay, so one graph's intermediates may reuse another's memory."""

    def __init__(self, forward, device, graph_type=CudaGraph, limit: int = MAX_GRAPHS):
        self.forward, self.device, self.graph_type, self.limit = forward, device, graph_type, limit
        self.stream, self.pool = graph_type.resources(device)
        self.graphs: dict[tuple[int, ...], object] = {}
        self.eager_calls = 0

    def __call__(self, x):
        key = tuple(x.shape)
        graph = self.graphs.get(key)
        if graph is None:
            if len(self.graphs) >= self.limit:
                self.eager_calls += 1
                return self.forward(x)
            graph = self.graphs[key] = self.graph_type(self.forward, x, self.stream, self.pool)
        return graph(x)


# ------------------------------------------------------------------------------------------ host copies

class HostStaging:
    """Host tensors for the copies to and from the GPU, page-locked when `pin` (a pageable copy goes through a
    driver bounce buffer and blocks the host), reused across calls and grown only when a shape grows. The output
    is copied back in its own dtype (FP16/bf16 logits: half the bytes of FP32) and widened on the host."""

    def __init__(self, pin: bool):
        self.pin = pin
        self.buffers: dict[str, object] = {}

    def _host(self, role: str, shape: tuple[int, ...], dtype):
        import torch

        count = math.prod(shape)
        buffer = self.buffers.get(role)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < count:
            buffer = self.buffers[role] = torch.empty(count, dtype=dtype, pin_memory=self.pin)
        return buffer[:count].view(shape)

    def upload(self, batch: np.ndarray, device):
        import torch

        staged = self._host("input", batch.shape, torch.from_numpy(batch[:0]).dtype)
        staged.numpy()[...] = batch
        # Asynchronous from pinned memory; the buffer is rewritten only after download's synchronize.
        return staged.to(device, non_blocking=self.pin)

    def download(self, out, synchronize) -> np.ndarray:
        import torch

        staged = self._host("output", tuple(out.shape), out.dtype)
        staged.copy_(out, non_blocking=self.pin)
        synchronize()
        # A copy even for FP32: the staged buffer is reused by the next call.
        return staged.to(torch.float32, copy=True).numpy()
