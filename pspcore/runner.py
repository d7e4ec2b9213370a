"""The one interface every inference backend implements (after Polygraphy's runners): build it with a model
path, `activate()`, `infer(batch)` as often as needed, `deactivate()`; or use it as a context manager.

The base class does the work all backends share: it checks a batch against the model's InputSpec, splits a
batch larger than the model takes and pads one smaller than it needs, and times the calls. A backend only
loads its model (`activate`) and runs one batch the model accepts as it is (`run_batch`)."""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pspcore.errors import InputError, PSPError
from pspcore.model_info import ModelInfo
from pspcore.options import BackendOptions


@dataclass
class Timing:
    """Where the last `infer` spent its time, in milliseconds. Host-only backends fill `compute_ms` only."""

    h2d_ms: float = 0.0
    compute_ms: float = 0.0
    d2h_ms: float = 0.0

    def add(self, h2d_ms: float = 0.0, compute_ms: float = 0.0, d2h_ms: float = 0.0) -> None:
        self.h2d_ms += h2d_ms
        self.compute_ms += compute_ms
        self.d2h_ms += d2h_ms


@dataclass
class InputSpec:
    """What the model accepts: a fixed (H, W) `size` (None when dynamic, then optionally bounded by
    `min_size`/`max_size`), and batch sizes min_batch..max_batch (max None = any; fixed_batch = exactly)."""

    size: tuple[int, int] | None
    min_batch: int = 1
    max_batch: int | None = None
    fixed_batch: int | None = None
    min_size: tuple[int, int] | None = None
    max_size: tuple[int, int] | None = None

    def size_problem(self, size: tuple[int, int]) -> str | None:
        """Why an input of `size` (H, W) cannot run, or None."""
        h, w = size
        if self.size and (h, w) != tuple(self.size):
            return f"takes {self.size[0]}x{self.size[1]} inputs, got {h}x{w}"
        lo, hi = self.min_size, self.max_size
        if (lo and (h < lo[0] or w < lo[1])) or (hi and (h > hi[0] or w > hi[1])):
            low, high = lo or (1, 1), hi or ("any", "any")
            return (f"takes inputs from {low[0]}x{low[1]} to {high[0]}x{high[1]} (its build profile), "
                    f"got {h}x{w}")
        return None

    def whole_batch_problem(self, batch: int) -> str | None:
        """Why a batch of `batch` would not run as one call (it would be split or padded), or None. A fixed
        batch is always split into whole calls, so it never counts as a problem."""
        if self.fixed_batch is not None:
            return None
        if self.max_batch is not None and batch > self.max_batch:
            return f"the model accepts batches up to {self.max_batch}, not {batch}"
        if batch < self.min_batch:
            return f"the model needs batches of at least {self.min_batch}"
        return None

    @property
    def step(self) -> int | None:
        """The most images one backend call takes (None: any number)."""
        return self.fixed_batch or self.max_batch

    @property
    def least(self) -> int:
        """The fewest images one backend call takes; fewer are padded with zeros."""
        return self.fixed_batch or self.min_batch


class Runner(abc.ABC):
    """Runs one model file. `infer` takes a float32 [N, 3, H, W] normalised batch (see pspcore.preprocess)
    and returns logits [N, C, H, W] float32, or labels [N, H, W] integers when `info.output == "labels"`.

    The lifecycle is Polygraphy's: the constructor only keeps the options (cheap: no file is opened);
    `activate()` loads the model (`load`, which sets `info` and `input_spec`), `deactivate()` releases all it
    holds (`release`); `with runner:` does both. Subclasses implement `load`, `release` and `run_batch`.

    A backend declares its options once, in a pspcore.options.BackendOptions dataclass (`options_class`), and
    registers itself by `name` (pspcore.registry) and tells the registry what it needs: `requires`
    (modules that must be installed), `unavailable_reason()` (a deeper check: a GPU, a driver) and
    `auto_priority(model)` (how well it runs that model, for `--backend auto`). A backend that measures its own
    time (GPU events) sets `timed_by_wall = False` and adds to `last_timing` itself."""

    name = "base"
    options_class: type[BackendOptions] = BackendOptions  # what it takes: keywords, flags, the --device mapping
    requires: tuple[str, ...] = ()
    model_is_path = True  # False where the model is named some other way (a server URL)
    timed_by_wall = True

    def __init__(self, model_path: str, info: ModelInfo | None = None):
        self.model_path = str(model_path)
        self._info, self._input_spec = info, None  # set by `load` (or here, by a backend that knows already)
        self.last_timing = Timing()
        self.is_active = False
        self.notes: list[str] = []  # user-facing notices (fallbacks taken, defaults assumed)

    def _loaded(self, value, what: str):
        if value is None:
            raise PSPError(f"{self.display_name}: {what} is known once the model is loaded: activate the runner "
                           "first (`with runner:`)")
        return value

    @property
    def info(self) -> ModelInfo:
        """What the model says of itself (classes, palette, mean/std, input size): known once loaded."""
        return self._loaded(self._info, "its description")

    @info.setter
    def info(self, value: ModelInfo) -> None:
        self._info = value

    @property
    def input_spec(self) -> InputSpec:
        """What the model accepts (size, batch): known once loaded."""
        return self._loaded(self._input_spec, "its input spec")

    @input_spec.setter
    def input_spec(self, value: InputSpec) -> None:
        self._input_spec = value

    @classmethod
    def create(cls, model_path: str, **options) -> "Runner":
        """The runner for `model_path` (the registry's factory; a backend whose model decides the kind of
        runner, such as a served ensemble, chooses here)."""
        return cls(model_path, **options)

    @classmethod
    def auto_priority(cls, model_path: str) -> int | None:
        """How well this backend runs `model_path` (higher wins under --backend auto); None: not at all."""
        return None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this backend cannot run on this machine although its packages are installed, or None."""
        return None

    @property
    def processor(self) -> str:
        """Where the model's arithmetic runs, "cpu" or "gpu": which machine limit its rate is read against."""
        return "cpu"

    @property
    def display_name(self) -> str:
        """How error messages name the model."""
        return Path(self.model_path).name

    def load(self) -> None:
        """Load the model: open the file, session or connection; set `info` and `input_spec`."""

    def release(self) -> None:
        """Free everything `load` and the calls since took (sessions, buffers, connections)."""

    def activate(self) -> None:
        if not self.is_active:
            self.load()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            try:
                self.release()
            finally:
                self.is_active = False

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def describe(self) -> str:
        return f"{self.name} ({self.info.precision})"

    @abc.abstractmethod
    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """Run one float32 batch that fits the InputSpec as it is (size checked, batch count in range)."""

    def check(self, batch: np.ndarray) -> np.ndarray:
        """The batch as contiguous float32 [N, 3, H, W], or an InputError naming what does not fit."""
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[0] < 1:
            raise InputError(f"expected a float32 batch [N, 3, H, W], got shape {tuple(batch.shape)}")
        problem = self.input_spec.size_problem(tuple(batch.shape[2:]))
        if problem:
            raise InputError(f"{self.display_name} {problem}")
        return np.ascontiguousarray(batch, dtype=np.float32)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run any number of images: split into the largest calls the model takes, the last one padded to
        the fewest it needs; see the class docstring for shapes and types."""
        if not self.is_active:
            self.activate()
        batch = self.check(batch)
        self.last_timing = Timing()
        start = time.perf_counter()
        step, least = self.input_spec.step or len(batch), self.input_spec.least
        parts = []
        for i in range(0, len(batch), step):
            chunk = batch[i:i + step]
            pad = max(0, least - len(chunk))
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            parts.append(self.run_batch(chunk)[:len(chunk) - pad])
        if self.timed_by_wall:
            self.last_timing.compute_ms = (time.perf_counter() - start) * 1e3
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class FrameRunner(Runner):
    """A runner whose model does its own pre- and post-processing (a served image -> labels ensemble): `infer`
    takes RGB uint8 frames [H, W, 3] of any size (a list, or an [N, H, W, 3] array) and returns their label
    maps at their own size, stacked when they share one size, else a list. Callers give it frames instead of
    network batches; it has no network input size."""

    def check(self, frames) -> list[np.ndarray]:
        frames = [np.ascontiguousarray(f) for f in frames]
        for frame in frames:
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
                raise InputError(f"{self.display_name} takes RGB uint8 frames [H, W, 3], got "
                                 f"{frame.dtype} {tuple(frame.shape)}")
        return frames

    def infer(self, frames):
        if not self.is_active:
            self.activate()
        frames = self.check(frames)
        self.last_timing = Timing()
        start = time.perf_counter()
        labels = [self.run_batch(frame) for frame in frames]
        if self.timed_by_wall:
            self.last_timing.compute_ms = (time.perf_counter() - start) * 1e3
        return np.stack(labels) if len({l.shape for l in labels}) == 1 else labels
