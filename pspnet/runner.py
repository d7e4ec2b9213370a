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
from pspcore.precisions import RUNNER_PRECISIONS
from pspcore.runner import InputSpec, Runner
from pspnet.gpu import CudaGraph, CudaGraphs, HostStaging, cudnn_benchmark, strict_fp32

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


@dataclass(frozen=True)
class TorchOptions(BackendOptions):
    """What the torch backend takes."""

    arch: str | None = option(None, "the architecture, for a checkpoint that does not say")
    num_classes: int | None = option(None, "the class count, for a checkpoint that does not say")
    device: str = option("cpu", "'auto', 'cpu', 'cuda' or 'cuda:N' (set by --device; auto: CUDA when torch sees "
                                "a GPU)")
    threads: int | None = threads_option()
    precision: str = option("fp32", "autocast precision (weights stay FP32) [default: fp32]", cli=True,
                            choices=RUNNER_PRECISIONS)
    channels_last: bool = option(False, "run in the channels-last memory format")
    cuda_graphs: bool = option(False, "replay the forward as a CUDA graph captured once per input shape (needs "
                                      "--device cuda)", cli=True)

    @classmethod
    def from_device(cls, device: str) -> dict:
        return {"device": device}  # auto: CUDA when torch sees a GPU (resolve_device)


class TorchRunner(Runner):
    """Runs a PSPNet checkpoint in PyTorch (options: TorchOptions). FP32 is IEEE FP32: TF32 is off while it
    runs."""

    name = "torch"
    options_class = TorchOptions
    requires = ("torch",)
    graph_type = CudaGraph  # what cuda_graphs captures with (a test may put a stand-in here)

    def __init__(self, model_path, **options):
        super().__init__(str(model_path))
        o = self.options_class.parse(self.name, options)
        if o.precision not in RUNNER_PRECISIONS:
            raise InputError(f"--precision {o.precision}: choose one of {', '.join(RUNNER_PRECISIONS)}")
        self.arch, self.num_classes, self.device_name, self.threads = o.arch, o.num_classes, o.device, o.threads
        self.precision, self.channels_last, self.cuda_graphs = o.precision, bool(o.channels_last), bool(o.cuda_graphs)
        self.model = self.device = None
        self._graphs = self._staging = None
        self._seen_shapes: set[tuple[int, ...]] = set()

    @classmethod
    def auto_priority(cls, model_path: str) -> int | None:
        return 100 if suffix_of(model_path) in CHECKPOINT_SUFFIXES else None

    def load(self) -> None:
        import torch

        from pspnet.checkpoint import load_model

        if self.threads:
            torch.set_num_threads(int(self.threads))
        device = torch.device(resolve_device(self.device_name))
        if device.type == "cuda" and device.index is None:  # pinned to the GPU current now, not whichever is later
            device = torch.device("cuda", torch.cuda.current_device())
        if self.cuda_graphs and not self.graph_type.supports(device):
            raise InputError("--cuda-graphs needs a CUDA device (--device cuda)")
        model, info = load_model(self.model_path, self.arch, self.num_classes)
        model = model.to(device).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model, self.device = model, device
        self._staging = HostStaging(pin=True) if device.type == "cuda" else None
        if self.cuda_graphs:
            self._graphs = CudaGraphs(self._forward, device, self.graph_type)
        # A checkpoint runs at any size: the stored input size is a default, not a constraint.
        self.info = info.with_(output="logits", dynamic_shape=True, dynamic_batch=True, precision=self.precision)
        self.input_spec = InputSpec(size=None)

    def release(self) -> None:
        self.model = self._graphs = self._staging = None  # the graphs hold their memory pool until dropped
        self._seen_shapes = set()

    def _forward(self, x):
        import torch

        if self.precision == "fp32":
            with strict_fp32():  # cuDNN would otherwise run the convolutions in TF32
                return self.model(x)
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        # No cast cache under CUDA graphs (torch.cuda.graphs asks for this): cached casts made during capture
        # would be freed when the autocast region ends while the graph still reads them.
        with torch.autocast(device_type=self.device.type, dtype=dtype, cache_enabled=not self.cuda_graphs):
            return self.model(x)

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if self._staging is None:  # on the CPU (or a stand-in device): nothing to copy
            with torch.inference_mode():
                x = self._layout(torch.from_numpy(batch))
                out = self._graphs(x) if self._graphs is not None else self._forward(x)
                return out.to(torch.float32, copy=True).numpy()
        shape = tuple(batch.shape)
        # This runner's GPU current for the whole call (another runner may have made its own current), and cuDNN's
        # kernel search for a shape that repeats (a graph's shape, or one seen before): it costs once per shape.
        with torch.inference_mode(), torch.cuda.device(self.device), cudnn_benchmark(
                self.cuda_graphs or shape in self._seen_shapes):
            self._seen_shapes.add(shape)
            x = self._layout(self._staging.upload(batch, self.device))
            out = self._graphs(x) if self._graphs is not None else self._forward(x)
            return self._staging.download(out, torch.cuda.current_stream(self.device).synchronize)

    def _layout(self, x):
        import torch

        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @property
    def _where(self) -> str:
        """The device it runs on: the loaded model's, else the one asked for."""
        return self.device.type if self.device is not None else self.device_name

    @property
    def processor(self) -> str:
        return "gpu" if self._where.startswith("cuda") else "cpu"

    def describe(self) -> str:
        extras = [self.precision] + (["channels_last"] if self.channels_last else []) + (
            ["CUDA graphs"] if self.cuda_graphs else [])
        arch = self._info.arch if self._info is not None else ""  # known once loaded
        return f"{self.name}[{self._where}] ({arch or 'checkpoint'}, {', '.join(extras)})"
