"""Automatic repair of a converted model below its gate, keeping as much of the network in low precision as
possible: plain conversion, then (INT8) cross-layer equalization, then the other calibration methods, then
FP32 fallback of the most sensitive nodes added greedily (ranked layer by layer, re-ranked after each
conversion) until the gate holds or the budget is spent. What each step means for a precision is the target's
(export.precision.target): its conversion, the runtime that judges it, how it keeps a node in higher precision."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from export.evaluation import logits, open_runner
from export.parity import FP32_MAX_REL
from export.precision.equalize import equalize
from export.precision.layerwise import COMPUTE, LayerError, compare_layers, upstream_compute
from export.precision.target import PrecisionTarget
from export.precision.verdict import GateError, Verdict, judge
from pspcore.model_info import ModelInfo

MAX_RUNS = 12  # conversions in all; a PSPNet-50 INT8 conversion takes about a minute on 2 cores
MAX_FP32_SHARE = 0.25  # of the compute nodes: past this, FP16 is the better answer
RANK_IMAGES = 4  # calibration images the layer-by-layer ranking runs on


@dataclass
class Attempt:
    """One conversion tried: what was applied and the agreement it reached."""

    step: str
    method: str | None
    equalized: bool
    kept_fp32: list[str]
    agreement: float
    miou_drop: float | None
    seconds: float
    passed: bool


@dataclass
class Job:
    """What to convert and how it is judged. `source_model`: the FP32 model loaded once, `info` its metadata;
    `calib`: the calibration batch (INT8 and the ranking), `verify` the held-out batch, `reference` the FP32
    logits on it, `miou` an optional labelled evaluation of a Runner, `reference_miou` the FP32 model's;
    `target`: the conversion to the precision target, which converts, writes and names the runtime judging."""

    source: Path
    source_model: object  # onnx.ModelProto of `source`
    info: ModelInfo  # of `source`
    target: PrecisionTarget
    method: str | None
    calib: np.ndarray
    verify: np.ndarray
    reference: np.ndarray
    min_agreement: float
    max_miou_drop: float | None = None
    miou: Callable | None = None
    reference_miou: float | None = None
    log: Callable[[str], None] = lambda line: None

    @property
    def what(self) -> str:
        return self.target.label


@dataclass
class Candidate:
    """One converted model: how it was made, the model in memory and as a file in the work folder (what is
    run and judged), and its verdict once judged."""

    step: str
    method: str | None
    equalized: bool
    kept_fp32: list[str]
    model: object  # onnx.ModelProto
    path: Path
    started: float
    verdict: Verdict | None = None
    passed: bool = False


@dataclass
class Outcome:
    """The plain conversion, the candidate that passed (the plain one when it did), every attempt, and the
    per-layer sensitivity of the plain conversion (when repair ranked layers)."""

    plain: Candidate
    chosen: Candidate
    attempts: list[Attempt]
    sensitivity: list[LayerError] = field(default_factory=list)


class Search:
    """Converts and judges candidates for one job, recording each attempt; candidate files live in `work`."""

    def __init__(self, job: Job, work: Path):
        self.job, self.work, self.attempts = job, work, []

    def convert(self, step: str, source: Path, method: str | None, exclude: list[str],
                equalized: bool) -> Candidate:
        job, start = self.job, time.perf_counter()
        model, path = job.target.candidate(source, job.source_model if source == job.source else None,
                                           tuple(exclude), job.calib, method, job.info,
                                           self.work / f"candidate_{len(self.attempts)}")
        return Candidate(step, method, equalized, list(exclude), model, path, start)

    def judge(self, candidate: Candidate) -> Candidate:
        """Run the candidate's file on the held-out images (and the labelled list) and judge it."""
        job = self.job
        with open_runner(candidate.path, backend=job.target.backend) as runner:
            miou = (job.reference_miou, job.miou(runner)) if job.miou is not None else None
            candidate.verdict = judge(job.reference, logits(runner, job.verify), miou)
        candidate.passed = candidate.verdict.passes(job.min_agreement, job.max_miou_drop)
        seconds = time.perf_counter() - candidate.started
        self.attempts.append(Attempt(candidate.step, candidate.method, candidate.equalized, candidate.kept_fp32,
                                     candidate.verdict.agreement, candidate.verdict.miou_drop, seconds,
                                     candidate.passed))
        drop = candidate.verdict.miou_drop
        job.log(f"{candidate.step:24s} agreement {100 * candidate.verdict.agreement:6.2f}%  "
                + (f"mIoU drop {drop:+.2f} pts  " if drop is not None else "")
                + f"({len(candidate.kept_fp32)} node(s) FP32, {seconds:.1f} s)")
        if not candidate.passed and candidate.step != "plain":
            job.target.remove(candidate.path)  # only the plain file (latency) and the one that passed are needed
        return candidate

    def attempt(self, step: str, source: Path, method: str | None, exclude: list[str], equalized: bool
                ) -> Candidate:
        return self.judge(self.convert(step, source, method, exclude, equalized))


def repair(search: Search, plain: Candidate, fallback: str = "auto", max_runs: int | None = None) -> Outcome:
    """The outcome of a judged plain conversion: itself when it passed; below the gate, repaired (fallback
    'auto') or refused (GateError, 'none'). `max_runs`: conversions in all, MAX_RUNS by default."""
    job = search.job
    max_runs = MAX_RUNS if max_runs is None else max_runs
    outcome = Outcome(plain, plain, search.attempts)
    if plain.passed:
        return outcome
    if fallback == "none":
        raise GateError(plain.verdict.failure(job.what, job.min_agreement, job.max_miou_drop)
                        + "; automatic repair is off (--fallback none), nothing written")
    outcome.sensitivity = compare_layers(job.source_model, plain.model, job.calib[:RANK_IMAGES])
    base, best = job.source, plain
    if job.target.calibrated:
        equalized = equalize(job.source, search.work / "equalized.onnx")
        if equalized.pairs and _still_fp32(job, equalized.path):
            candidate = search.attempt("equalized", equalized.path, job.method, [], True)
            if candidate.verdict.agreement >= best.verdict.agreement:
                base, best = equalized.path, candidate
            if candidate.passed:
                return _chosen(outcome, candidate)
        for method in job.target.methods:
            if method == job.method or len(search.attempts) >= max_runs:
                continue
            candidate = search.attempt(f"method {method}", base, method, [], base != job.source)
            if candidate.verdict.agreement > best.verdict.agreement:
                best = candidate
            if candidate.passed:
                return _chosen(outcome, candidate)
    return _fallback(search, outcome, base, best, max_runs)


def _still_fp32(job: Job, path: Path) -> bool:
    """Equalization is exact in FP32; a model it changed beyond float rounding is not used."""
    with open_runner(path) as runner:
        report = judge(job.reference, logits(runner, job.verify))
    ok = report.max_rel_to_range <= FP32_MAX_REL
    if not ok:
        job.log(f"equalization changed the FP32 output (error / range {report.max_rel_to_range:.2g}): not used")
    return ok


def _fallback(search: Search, outcome: Outcome, base: Path, best: Candidate, max_runs: int) -> Outcome:
    """Keep the worst node (by the error it adds, re-ranked after each conversion) in FP32 until the gate holds.
    For a target whose quantizer puts the Q/DQ at the producer (ONNX Runtime), the producer of its input goes
    too."""
    import onnx

    job = search.job
    graph = job.source_model if base == job.source else onnx.load(str(base))
    compute = [n.name for n in graph.graph.node if n.op_type in COMPUTE]
    upstream = upstream_compute(graph)
    exclude: list[str] = []
    model = best.model
    while len(search.attempts) < max_runs and len(exclude) < MAX_FP32_SHARE * len(compute):
        ranked = [r for r in sorted(compare_layers(graph, model, job.calib[:RANK_IMAGES]), key=lambda r: -r.jump)
                  if r.node not in exclude]
        if not ranked:
            break
        chosen = [ranked[0].node]
        if job.target.fallback_takes_producer:
            chosen += sorted(upstream.get(ranked[0].node, set()) - set(exclude))
        exclude += [n for n in chosen if n not in exclude]
        candidate = search.attempt(f"fallback {len(exclude)} node(s)", base, best.method, exclude,
                                   base != job.source)
        model = candidate.model
        if candidate.passed:
            return _chosen(outcome, candidate)
    best_agreement = max(a.agreement for a in search.attempts)
    tried = "equalization, calibration methods and " if job.target.calibrated else ""
    raise GateError(f"{job.what} keeps at most {100 * best_agreement:.2f}% of the FP32 labels on "
                    f"{len(job.verify)} held-out images after {len(search.attempts)} conversions (repair tried "
                    f"{tried}FP32 fallback of {len(exclude)} nodes), below the gate {100 * job.min_agreement:g}%; "
                    f"lower --min-agreement{job.target.advice} (nothing written)")


def _chosen(outcome: Outcome, candidate: Candidate) -> Outcome:
    outcome.chosen = candidate
    return outcome


def attempts_as_dicts(attempts: list[Attempt]) -> list[dict]:
    return [asdict(a) for a in attempts]
