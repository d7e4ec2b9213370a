"""The one interface every inference backend implements (after Polygraphy's runners): build it with a model
path, `activate()`, `infer(batch)` as often as needed, `deactivate()`; or use it as a context manager."""
from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from runtime.metadata import ModelInfo


@dataclass
class Timing:
    """Where the last `infer` spent its time, in milliseconds. Host-only backends fill `compute_ms` only."""

    h2d_ms: float = 0.0
    compute_ms: float = 0.0
    d2h_ms: float = 0.0


@dataclass
class InputSpec:
    """What the model accepts: fixed (H, W) or None when dynamic; batch sizes min..max (max None = any)."""

    size: tuple[int, int] | None
    min_batch: int = 1
    max_batch: int | None = None
    fixed_batch: int | None = None


class Runner(abc.ABC):
    """Runs one model file. `infer` takes a float32 [N, 3, H, W] normalised batch (see runtime.preprocess)
    and returns logits [N, C, H, W] float32, or labels [N, H, W] integers when `info.output == "labels"`."""

    name = "base"

    def __init__(self, model_path: str, info: ModelInfo | None = None):
        self.model_path = str(model_path)
        self.info = info or ModelInfo()
        self.input_spec = InputSpec(size=None)
        self.last_timing = Timing()
        self.is_active = False
        self.notes: list[str] = []  # user-facing notices (fallbacks taken, defaults assumed)

    def activate(self) -> None:
        self.is_active = True

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; see the class docstring for shapes and types."""

    def deactivate(self) -> None:
        self.is_active = False

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def describe(self) -> str:
        return f"{self.name} ({self.info.precision})"
