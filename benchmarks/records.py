"""The plain records of a psp-bench run, below the modules that fill them in (loading, limits, bench): what is
asked (Candidate, BenchConfig), what could not run (Unavailable) and what was measured (Series, Result,
BenchReport)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.machine import GemmRate
from benchmarks.stats import Summary


@dataclass(frozen=True)
class Candidate:
    """One thing to measure: a model file on a backend ('auto' picks by file type)."""

    model: str
    backend: str = "auto"
    baseline: bool = False


@dataclass(frozen=True)
class BenchConfig:
    batches: tuple[int, ...] = (1,)
    size: tuple[int, int] | None = None  # None: the first loaded model's input size, used for all
    warmup_ms: float = 200.0
    duration_s: float = 3.0
    min_iters: int = 10
    slice_ms: float = 200.0  # one runner's turn in the round robin
    threads: int | None = None
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:N (pspcore.device)
    # The backends' own options (e.g. (("shm", True), ("precision", "fp16"))): each non-baseline runner whose
    # backend takes one gets it (benchmarks.loading.load_candidate)
    backend_options: tuple[tuple[str, object], ...] = ()
    limits: bool = False  # measure the machine's INT8/FP32 GEMM rates and each model's fraction of them


@dataclass
class Series:
    """Raw per-iteration samples of one runner at one batch size, in milliseconds."""

    latency_ms: list[float] = field(default_factory=list)
    h2d_ms: list[float] = field(default_factory=list)
    compute_ms: list[float] = field(default_factory=list)
    d2h_ms: list[float] = field(default_factory=list)

    @property
    def busy_s(self) -> float:
        return sum(self.latency_ms) / 1e3


@dataclass
class Result:
    label: str
    model: str
    backend: str
    precision: str
    batch: int
    size: tuple[int, int]
    baseline: bool
    latency: Summary
    h2d: Summary | None
    compute: Summary | None
    d2h: Summary | None
    qps: float  # batches per second: iterations / time spent inside infer (one synchronous stream)
    images_per_s: float
    speedup: float | None = None  # baseline median latency / this median latency, same batch
    memory: dict = field(default_factory=dict)
    latency_samples_ms: list[float] = field(default_factory=list)
    gop: float | None = None  # Conv + MatMul giga-operations per image (benchmarks.model_cost)
    tops: float | None = None  # achieved: gop x batch / median latency, tera-operations per second
    limit_fraction: float | None = None  # tops / the machine's GEMM rate of the model's kind (int8 or fp32)
    limit_kind: str | None = None
    processor: str = "cpu"  # where the runner computed ("cpu" or "gpu"): which machine limit applies

    def to_dict(self, samples: bool = True) -> dict:
        data = asdict(self)
        if not samples:
            data.pop("latency_samples_ms")
        return data


@dataclass(frozen=True)
class Unavailable:
    model: str
    backend: str
    reason: str
    batch: int | None = None  # None: the model could not be used at all

    def line(self) -> str:
        where = f" at batch {self.batch}" if self.batch is not None else ""
        return f"{Path(self.model).name} on {self.backend}{where}: {self.reason}"


@dataclass
class BenchReport:
    config: BenchConfig
    results: list[Result]
    unavailable: list[Unavailable]
    machine: dict
    memory_note: str
    schedule: dict[int, list[str]] = field(default_factory=dict)  # batch -> runner labels, slice by slice
    limits: list[GemmRate] = field(default_factory=list)  # the machine's GEMM rates, when measured

    @property
    def baseline(self) -> str | None:
        return next((r.label for r in self.results if r.baseline), None)

    def batches(self) -> list[int]:
        return sorted({r.batch for r in self.results})

    def fastest(self, batch: int) -> Result | None:
        at = [r for r in self.results if r.batch == batch]
        return max(at, key=lambda r: r.images_per_s) if at else None


