"""A fake backend for psp-bench tests: its cost is counted on a fake clock, so ratios and schedules are
exact and no test depends on how fast (or how busy) the machine is."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pspcore.errors import InputError
from pspcore.model_info import ModelInfo
from pspcore.options import BackendOptions, option, threads_option
from pspcore.runner import InputSpec, Runner


class FakeClock:
    """Seconds that pass only when a fake runner works. `slowdown(t)` models a noisy machine: the factor by
    which work started at time t is stretched (another process stealing the CPU)."""

    def __init__(self, slowdown=lambda t: 1.0):
        self.t = 0.0
        self.slowdown = slowdown

    def __call__(self) -> float:
        return self.t

    def spend(self, ms: float) -> None:
        self.t += ms / 1e3 * self.slowdown(self.t)


CLOCK = FakeClock()


@dataclass(frozen=True)
class FakeOptions(BackendOptions):
    threads: int | None = threads_option()
    precision: str | None = option(None, "the precision it reports [default: the model file's]", cli=True,
                                   choices=("fp16",))
    clock: object = option(None, "the FakeClock its cost is counted on [default: CLOCK]")


class FakeRunner(Runner):
    """Reads its behaviour from the model file (JSON): cost_ms, precision, size, max_batch, label, fail,
    processor ("cpu" or "gpu": where it claims to compute).
    With `real=True` it sleeps instead of advancing the fake clock (for CLI tests on the wall clock)."""

    name = "fake"
    options_class = FakeOptions
    timed_by_wall = False  # its cost is on the fake clock

    def __init__(self, model_path, **options):
        super().__init__(model_path)
        o = self.options_class.parse(self.name, options)
        threads, clock, precision = o.threads, o.clock, o.precision
        spec = json.loads(Path(model_path).read_text())
        if spec.get("fail"):
            raise InputError(f"{model_path}: {spec['fail']}")
        self.cost_ms = float(spec["cost_ms"])
        self.real = bool(spec.get("real"))
        self.clock = clock or CLOCK
        size = tuple(spec["size"]) if spec.get("size") else None
        self.info = ModelInfo(arch="fake", num_classes=3, precision=precision or spec.get("precision", "fp32"),
                              input_size=size or (33, 33))
        self.input_spec = InputSpec(size=size, max_batch=spec.get("max_batch"))
        self.threads = threads
        self.label = int(spec.get("label", 0))  # the class its logits favour everywhere
        self.calls = 0
        self._processor = spec.get("processor", "cpu")

    @property
    def processor(self) -> str:
        return self._processor

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        cost = self.cost_ms * len(batch)
        if self.real:
            time.sleep(cost / 1e3)
        else:
            self.clock.spend(cost)
        self.last_timing.add(compute_ms=cost)
        logits = np.zeros((len(batch), 3, *batch.shape[2:]), np.float32)
        logits[:, self.label] = 1.0
        return logits


def write_model(path: Path, **spec) -> str:
    path.write_text(json.dumps(spec))
    return str(path)
