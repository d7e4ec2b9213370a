"""A two-device stand-in for the slice of torch.cuda that pspnet.gpu uses, keeping the semantics that decide where
work goes (torch/cuda/__init__.py, torch/cuda/graphs.py):

- Every device has a current stream (its default stream at first). Work on a device's tensors is queued on that
  device's current stream, wherever the current device is.
- `stream(s)` makes `s` the current stream of its own device and makes that device current (torch.cuda.set_stream
  switches the device too), restoring both after.
- `graph(g, pool=None, stream=None)` captures on `stream`, or else on a process-wide stream made on whichever
  device was current the first time one was needed (graph.default_capture_stream). Work queued on a stream
  that is capturing is recorded instead of run; replay runs the recorded work. Work for another device's stream
  runs at once, so capturing on the wrong device records nothing: the empty graph's replays change nothing.

Kernels are the test's: `launch(device, op)` queues `op` (a callable on CPU tensors) as work on `device`."""
from __future__ import annotations

import contextlib
import itertools

import torch


class FakeStream:
    def __init__(self, device: int):
        self.device = torch.device("cuda", device)
        self.capture: list | None = None  # the recorded work while capturing

    def wait_stream(self, other) -> None:
        pass  # work runs in order here

    def synchronize(self) -> None:
        pass


class FakeTorchCuda:
    def __init__(self, devices: int = 2):
        self.devices = devices
        self.current = 0
        self.current_streams = {d: FakeStream(d) for d in range(devices)}
        self.pools: list[int] = []
        self.captures = self.replays = 0
        self._pool_ids = itertools.count(1)
        fake = self

        class CUDAGraph:
            def __init__(self):
                self.recorded: list | None = None

            def replay(self):
                fake.replays += 1
                for op in self.recorded:
                    op()

        class graph:
            default_capture_stream: FakeStream | None = None

            def __init__(self, cuda_graph, pool=None, stream=None, capture_error_mode="global"):
                if stream is None and type(self).default_capture_stream is None:
                    type(self).default_capture_stream = fake.Stream()
                self.cuda_graph, self.pool = cuda_graph, pool
                self.capture_stream = stream if stream is not None else type(self).default_capture_stream
                self.stream_ctx = fake.stream(self.capture_stream)

            def __enter__(self):
                self.stream_ctx.__enter__()
                self.capture_stream.capture = []
                fake.captures += 1

            def __exit__(self, *args):
                self.cuda_graph.recorded, self.capture_stream.capture = self.capture_stream.capture, None
                self.stream_ctx.__exit__(*args)

        self.CUDAGraph, self.graph = CUDAGraph, graph

    def _index(self, device) -> int:
        if device is None:
            return self.current
        index = device if isinstance(device, int) else torch.device(device).index
        if index is None or not 0 <= index < self.devices:
            raise RuntimeError(f"invalid device {device}")
        return index

    def Stream(self, device=None) -> FakeStream:  # noqa: N802  (torch's name)
        return FakeStream(self._index(device))

    def current_stream(self, device=None) -> FakeStream:
        return self.current_streams[self._index(device)]

    def graph_pool_handle(self) -> int:
        pool = next(self._pool_ids)
        self.pools.append(pool)
        return pool

    @contextlib.contextmanager
    def device(self, device):
        saved, self.current = self.current, self._index(device)
        try:
            yield
        finally:
            self.current = saved

    @contextlib.contextmanager
    def stream(self, stream: FakeStream):
        index = stream.device.index
        saved_device, saved_stream = self.current, self.current_streams[index]
        self.current, self.current_streams[index] = index, stream
        try:
            yield
        finally:
            self.current_streams[index], self.current = saved_stream, saved_device

    def launch(self, device: int, op) -> None:
        """Queue `op` as work on `device`: recorded if that device's current stream is capturing, else run."""
        stream = self.current_streams[device]
        if stream.capture is not None:
            stream.capture.append(op)
        else:
            op()
