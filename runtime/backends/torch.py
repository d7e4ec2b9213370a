"""PyTorch backend: runs a training checkpoint directly, the reference for parity checks. torch and pspnet are
imported inside the runner only, so the rest of the runtime never needs them."""
from __future__ import annotations

import time

import numpy as np

from runtime.backends.base import InputSpec, Runner
from runtime.errors import BackendUnavailable, InputError


class TorchRunner(Runner):
    """Options: arch / num_classes (only for checkpoints that do not say), device ('cpu', 'cuda'), threads."""

    name = "torch"

    def __init__(self, model_path, *, arch: str | None = None, num_classes: int | None = None,
                 device: str = "cpu", threads: int | None = None):
        super().__init__(str(model_path))
        try:
            import torch
            from pspnet.checkpoint import load_model
        except ImportError as exc:
            raise BackendUnavailable(f"the torch backend needs torch and the pspnet package ({exc})") from None
        if threads:
            torch.set_num_threads(int(threads))
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("torch here has no CUDA device; use --device cpu")
        model, info = load_model(model_path, arch, num_classes)
        self._torch = torch
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        # A checkpoint runs at any size: the stored input size is a default, not a constraint.
        self.info = info.with_(output="logits", dynamic_shape=True, dynamic_batch=True)
        self.input_spec = InputSpec(size=None)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise InputError(f"expected a batch [N, 3, H, W], got shape {batch.shape}")
        torch = self._torch
        start = time.perf_counter()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            out = self.model(x).float().cpu().numpy()
        self.last_timing.compute_ms = (time.perf_counter() - start) * 1e3
        return out

    def describe(self) -> str:
        return f"{self.name}[{self.device.type}] ({self.info.arch})"
