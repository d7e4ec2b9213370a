"""Automatic repair of a converted model below its gate, keeping as much of the network in low precision as
possible: plain conversion, then (INT8) cross-layer equalization, then the other calibration methods, then
FP32 fallback of the most sensitive nodes added greedily (ranked layer by layer, re-ranked after each
conversion) until the gate holds or the budget is spent."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from export.equalize import equalize
from export.layerwise import COMPUTE, LayerError, compare_layers, upstream_compute
from export.parity import FP32_MAX_REL
from export.precision import REPAIR_METHODS, fp16_model, int8_model
from export.verdict import GateError, Verdict, judge, run_logits, session

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
    """What to convert and how it is judged. `calib` is the calibration batch (INT8 and the ranking), `verify`
    the held-out batch, `reference` the FP32 logits on it, `miou` an optional labelled evaluation of a session."""

    source: Path
    precision: str
    target: str | None
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
        return "FP16 model" if self.precision == "fp16" else "INT8 model"


@dataclass
class Outcome:
    model: object  # onnx.ModelProto that passed
    verdict: Verdict
    plain: Verdict
    plain_model: object
    method: str | None
    equalized: bool
    equalized_pairs: int
    kept_fp32: list[str]
    attempts: list[Attempt] = field(default_factory=list)
    sensitivity: list[LayerError] = field(default_factory=list)


class _Search:
    def __init__(self, job: Job, work: Path):
        self.job, self.work, self.attempts = job, work, []

    def convert(self, source: Path, method: str | None, exclude: list[str]):
        if self.job.precision == "fp16":
            return fp16_model(source, tuple(exclude))
        return int8_model(source, self.job.calib, target=self.job.target, method=method, exclude=tuple(exclude))

    def verdict(self, model) -> Verdict:
        sess = session(model, target=self.job.target)
        miou = None
        if self.job.miou is not None:
            miou = (self.job.reference_miou, self.job.miou(sess))
        return judge(self.job.reference, run_logits(sess, self.job.verify), miou)

    def attempt(self, step: str, source: Path, method: str | None, exclude: list[str], equalized: bool):
        start = time.perf_counter()
        model = self.convert(source, method, exclude)
        verdict = self.verdict(model)
        passed = verdict.passes(self.job.min_agreement, self.job.max_miou_drop)
        self.attempts.append(Attempt(step, method, equalized, list(exclude), verdict.agreement, verdict.miou_drop,
                                     time.perf_counter() - start, passed))
        self.job.log(f"{step:24s} agreement {100 * verdict.agreement:6.2f}%  ({len(exclude)} node(s) FP32, "
                     f"{time.perf_counter() - start:.1f} s)")
        return model, verdict, passed


def repair(job: Job, work: Path, fallback: str = "auto", max_runs: int | None = None) -> Outcome:
    """Convert `job.source`; below the gate, repair (fallback 'auto') or refuse (GateError, 'none').
    `max_runs`: conversions in all, MAX_RUNS by default."""
    max_runs = MAX_RUNS if max_runs is None else max_runs
    search = _Search(job, work)
    model, verdict, passed = search.attempt("plain", job.source, job.method, [], False)
    outcome = Outcome(model, verdict, verdict, model, job.method, False, 0, [], search.attempts)
    if passed:
        return outcome
    if fallback == "none":
        raise GateError(verdict.failure(job.what, job.min_agreement, job.max_miou_drop)
                        + "; automatic repair is off (--fallback none), nothing written")
    outcome.sensitivity = compare_layers(job.source, model, job.calib[:RANK_IMAGES])
    base, best = job.source, (model, verdict)
    if job.precision == "int8":
        equalized = equalize(job.source, work / "equalized.onnx")
        outcome.equalized_pairs = equalized.pairs
        if equalized.pairs and _still_fp32(job, equalized.path):
            model, verdict, passed = search.attempt("equalized", equalized.path, job.method, [], True)
            if verdict.agreement >= best[1].agreement:
                base, best, outcome.equalized = equalized.path, (model, verdict), True
            if passed:
                return _done(outcome, model, verdict, [])
        for method in REPAIR_METHODS[job.target]:
            if method == job.method or len(search.attempts) >= max_runs:
                continue
            model, verdict, passed = search.attempt(f"method {method}", base, method, [], outcome.equalized)
            if verdict.agreement > best[1].agreement:
                best, outcome.method = (model, verdict), method
            if passed:
                return _done(outcome, model, verdict, [])
    return _fallback(search, outcome, base, best, max_runs)


def _still_fp32(job: Job, path: Path) -> bool:
    """Equalization is exact in FP32; a model it changed beyond float rounding is not used."""
    report = judge(job.reference, run_logits(session(path), job.verify))
    ok = report.max_rel_to_range <= FP32_MAX_REL
    if not ok:
        job.log(f"equalization changed the FP32 output (error / range {report.max_rel_to_range:.2g}): not used")
    return ok


def _fallback(search: _Search, outcome: Outcome, base: Path, best, max_runs: int) -> Outcome:
    """Keep the worst node (by the error it adds, re-ranked after each conversion) in FP32 until the gate holds.
    For ONNX Runtime the node producing its input goes too: that quantizer puts the Q/DQ at the producer."""
    import onnx

    job = search.job
    graph = onnx.load(str(base))
    compute = [n.name for n in graph.graph.node if n.op_type in COMPUTE]
    upstream = upstream_compute(graph)
    exclude: list[str] = []
    model, verdict = best
    while len(search.attempts) < max_runs and len(exclude) < MAX_FP32_SHARE * len(compute):
        ranked = [r for r in sorted(compare_layers(base, model, job.calib[:RANK_IMAGES]), key=lambda r: -r.jump)
                  if r.node not in exclude]
        if not ranked:
            break
        chosen = [ranked[0].node]
        if job.target == "onnxruntime":
            chosen += sorted(upstream.get(ranked[0].node, set()) - set(exclude))
        exclude += [n for n in chosen if n not in exclude]
        model, verdict, passed = search.attempt(f"fallback {len(exclude)} node(s)", base, outcome.method, exclude,
                                                outcome.equalized)
        if passed:
            return _done(outcome, model, verdict, exclude)
    best_agreement = max(a.agreement for a in search.attempts)
    advice = " or convert to FP16 instead" if job.precision == "int8" else ""
    raise GateError(f"{job.what} keeps at most {100 * best_agreement:.2f}% of the FP32 labels on "
                    f"{len(job.verify)} held-out images after {len(search.attempts)} conversions (repair tried "
                    f"{'equalization, calibration methods and ' if job.precision == 'int8' else ''}FP32 fallback of "
                    f"{len(exclude)} nodes), below the gate {100 * job.min_agreement:g}%; lower --min-agreement"
                    f"{advice} (nothing written)")


def _done(outcome: Outcome, model, verdict: Verdict, exclude: list[str]) -> Outcome:
    outcome.model, outcome.verdict, outcome.kept_fp32 = model, verdict, list(exclude)
    return outcome


def attempts_as_dicts(attempts: list[Attempt]) -> list[dict]:
    return [asdict(a) for a in attempts]
