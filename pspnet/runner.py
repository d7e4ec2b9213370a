"""The PyTorch runner: runs a training checkpoint directly, the reference for parity checks and accuracy.
It lives with the model and is registered by name in pspcore.registry ("torch"), so the deployment runtime
never imports torch or pspnet."""
from __future__ import annotations

import numpy as np

from pspcore.errors import BackendUnavailable
from pspcore.runner import InputSpec, Runner


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; a CUDA device without CUDA is a clear error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailable(f"--device {device}: torch here has no CUDA device; use --device cpu")
    return device


class TorchRunner(Runner):
    """Options: arch / num_classes (only for checkpoints that do not say), device ('auto', 'cpu', 'cuda'),
    threads."""

    name = "torch"

    @classmethod
    def device_options(cls, device: str) -> dict:
        return {"device": device}  # auto: CUDA when torch sees a GPU (resolve_device)

    def __init__(self, model_path, *, arch: str | None = None, num_classes: int | None = None,
                 device: str = "cpu", threads: int | None = None):
        super().__init__(str(model_path))
        import torch

        from pspnet.checkpoint import load_model

        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(resolve_device(device))
        model, info = load_model(model_path, arch, num_classes)
        self._torch = torch
        self.model = model.to(self.device).eval()
        # A checkpoint runs at any size: the stored input size is a default, not a constraint.
        self.info = info.with_(output="logits", dynamic_shape=True, dynamic_batch=True)
        self.input_spec = InputSpec(size=None)

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            return self.model(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()

    def describe(self) -> str:
        return f"{self.name}[{self.device.type}] ({self.info.arch})"
