"""The PyTorch runner: runs a training checkpoint directly, the reference for parity checks and accuracy, and
the GPU path for machines without TensorRT (FP16/bf16 autocast, channels_last, CUDA graphs). It lives with the
model and is registered by name ("torch"), so the deployment runtime never imports torch or pspnet."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pspcore.device import parse_device
from pspcore.errors import BackendUnavailable, InputError
from pspcore.files import suffix_of
from pspcore.options import BackendOptions, option, threads_option
from pspcore.runner import InputSpec, Runner

PRECISIONS = ("fp32", "fp16", "bf16")  # fp16/bf16: torch.autocast around the forward; weights stay FP32


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")


def resolve_device(device: str | None) -> str:
    """--device (auto, cpu, cuda, cuda:N) -> a torch device string: auto is cuda when torch sees a GPU, else
    cpu; a CUDA device without CUDA is a clear error."""
    import torch

    device = parse_device(device or "auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(f"--device {device}: torch here has no CUDA device; use --device cpu")
    return device


class CudaGraph:
    """One input shape's forward captured as a CUDA graph (torch.cuda.CUDAGraph). Calling it copies the batch
    into the graph's static input and replays; the result lives in the static output, overwritten by the
    next call."""

    @staticmethod
    def supports(device) -> bool:
        return device.type == "cuda"

    def __init__(self, forward, example):
        import torch

        self.static_input = example.clone()
        # Warm up on a side stream first, as torch.cuda.graphs asks: cuDNN picks its kernels and the caching
        # allocator fills its pool outside the capture.
        side = torch.cuda.Stream(device=example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                forward(self.static_input)
        torch.cuda.current_stream(example.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_output = forward(self.static_input)

    def __call__(self, batch):
        self.static_input.copy_(batch)
        self.graph.replay()
        return self.static_output


@dataclass(frozen=True)
class TorchOptions(BackendOptions):
    """What the torch backend takes."""

    arch: str | None = option(None, "the architecture, for a checkpoint that does not say")
    num_classes: int | None = option(None, "the class count, for a checkpoint that does not say")
    device: str = option("cpu", "'auto', 'cpu', 'cuda' or 'cuda:N' (set by --device; auto: CUDA when torch sees "
                                "a GPU)")
    threads: int | None = threads_option()
    precision: str = option("fp32", "autocast precision (weights stay FP32) [default: fp32]", cli=True,
                            choices=PRECISIONS)
    channels_last: bool = option(False, "run in the channels-last memory format")
    cuda_graphs: bool = option(False, "replay the forward as a CUDA graph captured once per input shape (needs "
                                      "--device cuda)", cli=True)

    @classmethod
    def from_device(cls, device: str) -> dict:
        return {"device": device}  # auto: CUDA when torch sees a GPU (resolve_device)


class TorchRunner(Runner):
    """Runs a PSPNet checkpoint eagerly in PyTorch (options: TorchOptions). FP32 follows torch's TF32
    settings."""

    name = "torch"
    options_class = TorchOptions
    requires = ("torch",)
    graph_type = CudaGraph  # what cuda_graphs captures with (a test may put a stand-in here)

    def __init__(self, model_path, **options):
        super().__init__(str(model_path))
        o = self.options_class.parse(self.name, options)
        if o.precision not in PRECISIONS:
            raise InputError(f"--precision {o.precision}: choose one of {', '.join(PRECISIONS)}")
        self.arch, self.num_classes, self.device_name, self.threads = o.arch, o.num_classes, o.device, o.threads
        self.precision, self.channels_last, self.cuda_graphs = o.precision, bool(o.channels_last), bool(o.cuda_graphs)
        self.model = self.device = None
        self._graph = self._graph_shape = None

    @classmethod
    def auto_priority(cls, model_path: str) -> int | None:
        return 100 if suffix_of(model_path) in CHECKPOINT_SUFFIXES else None

    def load(self) -> None:
        import torch

        from pspnet.checkpoint import load_model

        if self.threads:
            torch.set_num_threads(int(self.threads))
        device = torch.device(resolve_device(self.device_name))
        if self.cuda_graphs and not self.graph_type.supports(device):
            raise InputError("--cuda-graphs needs a CUDA device (--device cuda)")
        model, info = load_model(self.model_path, self.arch, self.num_classes)
        model = model.to(device).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.device = model, device
        # A checkpoint runs at any size: the stored input size is a default, not a constraint.
        self.info = info.with_(output="logits", dynamic_shape=True, dynamic_batch=True, precision=self.precision)
        self.input_spec = InputSpec(size=None)

    def release(self) -> None:
        self.model = self._graph = self._graph_shape = None  # the graph holds its memory pool until dropped

    def _forward(self, x):
        import torch

        if self.precision == "fp32":
            return self.model(x)
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        # No cast cache under CUDA graphs (torch.cuda.graphs asks for this): cached casts made during capture
        # would be freed when the autocast region ends while the graph still reads them.
        with torch.autocast(device_type=self.device.type, dtype=dtype, cache_enabled=not self.cuda_graphs):
            return self.model(x)

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out = self._replay(x) if self.cuda_graphs else self._forward(x)
            return out.float().cpu().numpy()

    def _replay(self, x):
        if self._graph_shape != tuple(x.shape):
            self._graph = None  # a graph is tied to its shapes; drop the old one before capturing anew
            self._graph = self.graph_type(self._forward, x)
            self._graph_shape = tuple(x.shape)
        return self._graph(x)

    def describe(self) -> str:
        extras = [self.precision] + (["channels_last"] if self.channels_last else []) + (
            ["CUDA graphs"] if self.cuda_graphs else [])
        where = self.device.type if self.device is not None else self.device_name
        arch = self._info.arch if self._info is not None else ""  # known once loaded
        return f"{self.name}[{where}] ({arch or 'checkpoint'}, {', '.join(extras)})"
