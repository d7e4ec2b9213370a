"""psp-bench's loading: every candidate model on its backend, created and activated once with its load time
and memory growth, its first inference at each batch size (so a size or batch it rejects is found before any
timing starts), and the seeded input every runner gets."""
from __future__ import annotations

import contextlib
import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.memory import MemoryProbe
from benchmarks.records import BenchConfig, Candidate, Unavailable
from pspcore.errors import InputError, PSPError, first_line, notice
from pspcore.geometry import runner_input_size
from pspcore.runner import FrameRunner, Runner

Log = Callable[[str], None]


@dataclass
class Loaded:
    candidate: Candidate
    runner: Runner
    label: str
    load_s: float
    memory: dict = field(default_factory=dict)


def candidate_options(candidate: Candidate, threads: int | None, device: str = "auto",
                      backend_options: dict | None = None) -> dict:
    """The runner options of one candidate: --device and --threads (which every runner must honour), and of
    `backend_options` (--shm, --precision, --cuda-graphs: the backends' own) those its backend takes, unless it
    is the baseline, which stays eager FP32."""
    from pspcore.cli import runner_options
    from pspcore.registry import resolve_backend, takes_option

    name, _ = resolve_backend(candidate.backend, candidate.model)
    extra = {} if candidate.baseline else {k: v for k, v in (backend_options or {}).items() if takes_option(name, k)}
    return runner_options(name, candidate.model, device=device, threads=threads, **extra)


def load_candidate(candidate: Candidate, threads: int | None, probe: MemoryProbe, device: str = "auto",
                   backend_options: dict | None = None) -> Loaded:
    """Create and activate the runner, measuring its load time and memory growth. Raises PSPError; so does
    an option its backend cannot honour (--threads on a GPU runner, --device on a server): those every runner
    must take. `backend_options` (--shm, --precision, --cuda-graphs: the backends' own) go to each runner whose
    backend takes them, except the baseline, which stays eager FP32."""
    from pspcore.registry import create_runner, resolve_backend, runner_class

    name, _ = resolve_backend(candidate.backend, candidate.model)
    cls = runner_class(name)
    if cls.model_is_path and not Path(candidate.model).exists():
        raise InputError(f"model not found: {candidate.model}")
    options = candidate_options(candidate, threads, device, backend_options)
    for package in cls.requires:  # import cost is not the model's memory
        with contextlib.suppress(ImportError):
            importlib.import_module(package)
    probe.start()
    t0 = time.perf_counter()
    try:
        runner = create_runner(name, candidate.model, **options)
        runner.activate()
    except PSPError:
        raise
    except Exception as exc:  # a backend's own failure type: still one clear line for the user
        raise InputError(f"cannot load: {first_line(exc)}") from None
    load_s = time.perf_counter() - t0
    label = f"{runner.name} {runner.info.precision}"
    return Loaded(candidate, runner, label, load_s, probe.stop())


def unique_labels(loaded: list[Loaded]) -> None:
    """'onnxruntime fp32' unless two share it; then add the model's file name."""
    counts: dict[str, int] = {}
    for item in loaded:
        counts[item.label] = counts.get(item.label, 0) + 1
    named = [f"{item.label} ({Path(item.candidate.model).name})" for item in loaded]
    for item, name in zip(loaded, named):
        if counts[item.label] > 1:
            # Served models can share a name (http://h:8000/m and grpc://h:8001/m): then the whole URL.
            item.label = name if named.count(name) == 1 else f"{item.label} ({item.candidate.model})"


def batch_problem(runner: Runner, batch: int, size: tuple[int, int]) -> str | None:
    """Why `runner` cannot take [batch, 3, *size] in one call, or None (the runner's own InputSpec rules)."""
    problem = runner.input_spec.size_problem(size)
    return f"the model {problem}" if problem else runner.input_spec.whole_batch_problem(batch)


def load_all(candidates: list[Candidate], config: BenchConfig, log: Log
             ) -> tuple[list[Loaded], list[Unavailable], tuple[int, int] | None, dict[str, set[int]]]:
    """Load the baseline first, then the rest; each runner's first inference at every batch size happens
    here (inside its memory probe), so a size or batch it rejects is found before any timing starts.
    Returns the loaded runners, the unavailable ones, the common input size and the batches each takes."""
    probe = MemoryProbe()
    loaded: list[Loaded] = []
    unavailable: list[Unavailable] = []
    usable: dict[int, set[int]] = {}
    size = config.size
    for cand in sorted(candidates, key=lambda c: not c.baseline):
        try:
            item = load_candidate(cand, config.threads, probe, config.device, dict(config.backend_options))
            probe.start()  # the peak of the first inferences, relative to RSS after loading
            # --size, else the baseline's (loaded first); each model's batches are then checked against it
            size = size or runner_input_size(item.runner, None)
            ok = _first_inferences(item, config, size, unavailable)
            first = probe.stop()
        except PSPError as exc:
            probe.stop()
            unavailable.append(Unavailable(cand.model, backend_name(cand), first_line(exc)))
            log(f"unavailable: {unavailable[-1].line()}")
            continue
        item.memory = {"load_mb": item.memory.get("resident_mb"), "peak_mb": _peak(item.memory, first),
                       "resident_mb": _sum(item.memory.get("resident_mb"), first.get("resident_mb"))}
        if not ok:
            item.runner.deactivate()
            continue
        usable[id(item)] = ok
        loaded.append(item)
        log(f"loaded {Path(cand.model).name} on {item.runner.describe()} in {item.load_s:.1f} s")
        for note in item.runner.notes:  # fallbacks taken (a GPU provider not usable, defaults assumed)
            notice(note, log)
    unique_labels(loaded)
    return loaded, unavailable, size, usable


def backend_name(cand: Candidate) -> str:
    from pspcore.registry import resolve_backend

    try:
        return resolve_backend(cand.backend, cand.model)[0]
    except PSPError:
        return cand.backend


def _sum(a, b):
    return None if a is None or b is None else round(a + b, 1)


def _peak(load: dict, first: dict):
    """Peak over loading and first inferences, both measured from the RSS before loading."""
    if "peak_mb" not in load or "peak_mb" not in first:
        return None
    return round(max(load["peak_mb"], load["resident_mb"] + first["peak_mb"]), 1)


def _first_inferences(item: Loaded, config: BenchConfig, size, unavailable: list[Unavailable]) -> set[int]:
    ok = set()
    for b in config.batches:
        problem = batch_problem(item.runner, b, size)
        if problem is None:
            try:
                item.runner.infer(runner_input(item.runner, make_input(b, size, config.seed)))
                ok.add(b)
                continue
            except PSPError as exc:
                problem = first_line(exc)
            except Exception as exc:  # the backend's own error type for a shape it refuses
                problem = f"inference failed: {first_line(exc)}"
        unavailable.append(Unavailable(item.candidate.model, item.runner.name, problem, b))
    return ok


def make_input(batch: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """The same normalised-looking random batch for every runner."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch, 3, *size), dtype=np.float32)


def runner_input(runner: Runner, batch: np.ndarray) -> np.ndarray:
    """The batch as the runner takes it: a served ensemble gets RGB uint8 frames [N, H, W, 3] of the same
    size (made from the batch, so every runner still sees the same seeded input)."""
    if not isinstance(runner, FrameRunner):
        return batch
    return np.ascontiguousarray(np.clip(batch * 40 + 128, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))

