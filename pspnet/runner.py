"""The PyTorch runner: runs a training checkpoint directly, the reference for parity checks and accuracy.
It lives with the model and is registered by name as an entry point ("torch", pyproject.toml), so the deployment runtime
never imports torch or pspnet."""
from __future__ import annotations

import numpy as np

from pspcore.device import cuda_index, parse_device
from pspcore.errors import BackendUnavailable
from pspcore.runner import InputSpec, Runner


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")


def resolve_device(device) -> str:
    """--device (auto, cpu, cuda, cuda:N) -> a torch device string: auto is cuda when torch sees a GPU, else
    cpu; a CUDA device without CUDA is a clear error."""
    import torch

    device = parse_device(device or "auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(f"--device {device}: torch here has no CUDA device; use --device cpu")
    return device if cuda_index(device) is None else f"cuda:{cuda_index(device)}"


class TorchRunner(Runner):
    """Options: arch / num_classes (only for checkpoints that do not say), device ('auto', 'cpu', 'cuda',
    'cuda:N'), threads."""

    name = "torch"
    requires = ("torch",)

    @classmethod
    def device_options(cls, device: str) -> dict:
        return {"device": device}  # auto: CUDA when torch sees a GPU (resolve_device)

    def __init__(self, model_path, *, arch: str | None = None, num_classes: int | None = None,
                 device: str | None = "auto", threads: int | None = None):
        super().__init__(str(model_path))
        self.arch, self.num_classes, self.threads = arch, num_classes, threads
        self.device_choice = parse_device(device or "auto")
        self.model = None

    @classmethod
    def auto_priority(cls, model_path: str) -> int | None:
        return 100 if model_path.lower().endswith(CHECKPOINT_SUFFIXES) else None

    def load(self) -> None:
        import torch

        from pspnet.checkpoint import load_model

        if self.threads:
            torch.set_num_threads(int(self.threads))
        self.device = torch.device(resolve_device(self.device_choice))
        model, info = load_model(self.model_path, self.arch, self.num_classes)
        self._torch = torch
        self.model = model.to(self.device).eval()
        # A checkpoint runs at any size: the stored input size is a default, not a constraint.
        self.info = info.with_(output="logits", dynamic_shape=True, dynamic_batch=True)
        self.input_spec = InputSpec(size=None)

    def release(self) -> None:
        self.model = None

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            return self.model(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()

    def describe(self) -> str:
        where = self.device.type if self.model is not None else str(self.device_choice)
        return f"{self.name}[{where}] ({self.info.arch})"
