"""Verified FP16/BF16/INT8 conversion: the FP32 model and its conversion run on held-out images, the conversion is
gated on strict argmax agreement (and the mIoU drop on labelled images), repaired when below the gate, and
only a model that passes is written, with what repair did recorded in its metadata; the written file is then
run again and must pass the same gate. Whatever fails once the file is written (its check, the report) removes
it: nothing is left at the output path unless every step passed.

The conversion is a pipeline of small steps (STEPS) that hand what they learn on in one State: the FP32
model is opened once, and no step reads again what an earlier one knew. What differs between precisions is
asked of the precision target (export.precision.target), never decided here by its name."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from export.evaluation import evaluate_miou, latency_ms, logits, open_runner
from export.precision.calibration import DEFAULT_NUM_IMAGES, spread
from export.precision.graph import calibration_batch, calibration_size, check_source
from export.precision.layerwise import compare_layers
from export.precision.repair import RANK_IMAGES, Candidate, Job, Outcome, Search, attempts_as_dicts, repair
from export.precision.report import PrecisionReport, flops_share, write_report_json
from export.precision.target import PrecisionTarget, create_target
from export.precision.verdict import GATE_ON, MIN_SURE_IMAGES, GateError, Verdict, judge
from export.scenes import draw_scene
from pspcore.errors import InputError, notice
from pspcore.files import check_writable, list_images
from pspcore.model_info import EXTRA_PRECISION_REPAIR, ModelInfo
from pspcore.preprocess import prepare_frame
from pspcore.runner import Runner

DRAWN_SCENES = 6  # FP16/BF16 check images when none are given


@dataclass(frozen=True)
class Conversion:
    """Options of a verified conversion (the psp-export fp16 / bf16 / int8 options)."""

    precision: str
    target: str | None = None  # the target's name among those of `precision`; None: the precision's only one
    method: str | None = None  # for targets calibrated on images; None: the target's default (its first method)
    num_images: int | None = DEFAULT_NUM_IMAGES
    size: tuple[int, int] | None = None
    verify_images: str | None = None
    min_agreement: float | None = None  # fraction; None: the target's default_gate
    eval_list: str | None = None
    max_miou_drop: float | None = None
    fallback: str = "auto"
    gate_on: str = "pooled"  # the pooled agreement or its lower bound over the images (verdict.GATE_ON)


@dataclass
class State:
    """What one conversion knows so far, handed from step to step. Set when it starts: the paths, options,
    gate, the conversion to the target and the open FP32 model; by the steps, in order: the FP32 model's info
    and graph, the image batches, the FP32 reference on them, the plain and the chosen candidate, the metadata
    to write, and the written file's verdict. What only one target needs, the target keeps."""

    src: Path
    dst: Path
    options: Conversion
    calib_paths: list[Path]
    gate: float
    target: PrecisionTarget
    fp32: Runner  # the FP32 model, opened once for the whole conversion
    work: Path  # candidate files
    log: Callable[[str], None]
    want_sensitivity: bool = False
    report_path: Path | str | None = None  # where the JSON report goes, if anywhere
    started: float = field(default_factory=time.perf_counter)
    info: ModelInfo | None = None
    source_model: object = None  # onnx.ModelProto of src, loaded once
    size: tuple[int, int] | None = None
    calib: np.ndarray | None = None  # for a target calibrated on images
    verify: np.ndarray | None = None
    where: str = ""
    reference: np.ndarray | None = None
    reference_miou: float | None = None
    search: Search | None = None
    plain: Candidate | None = None
    outcome: Outcome | None = None
    written_info: ModelInfo | None = None
    wrote: bool = False  # the file is at `dst`: a failure from here on removes it
    written: Verdict | None = None
    report: PrecisionReport | None = None
    latency: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def miou(self, runner: Runner) -> float:
        return evaluate_miou(runner, self.options.eval_list, self.info, self.size)


def held_out(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(calibration, verification): every 4th image held out, at least 2 of them (and never more than half)."""
    if len(paths) < 3:
        raise InputError(f"{len(paths)} calibration image(s) leave none to verify on: give at least 3, or "
                         "--verify-images DIR")
    held = spread(paths, max(len(paths) // 4, 2))
    return [p for p in paths if p not in held], held


def drawn_scenes(info: ModelInfo, size: tuple[int, int], count: int = DRAWN_SCENES) -> np.ndarray:
    """FP16 check images when none are given: drawn street scenes of three shapes, letterboxed like frames."""
    shapes = [(size[0], size[1]), (size[0] * 3 // 4, size[1]), (size[0], size[1] * 2 // 3)]
    frames = [draw_scene(*shapes[i % 3], seed=500 + i) for i in range(count)]
    return np.stack([prepare_frame(f, info, size)[0] for f in frames])


# --- the steps, in order -------------------------------------------------------------------------------------

def read_source(state: State) -> None:
    """The FP32 model's metadata (from its open session) and graph, and the size images are prepared at."""
    import onnx

    state.info = check_source(state.fp32.info, state.src)
    state.size = calibration_size(state.src, state.info, state.options.size)
    state.source_model = onnx.load(str(state.src))


def prepare_images(state: State) -> None:
    """The calibration batch (targets calibrated on images) and the verification batch: --verify-images, else
    every 4th calibration image held out (calibrated targets), else drawn scenes."""
    options, verify_paths, calibrated = state.options, None, state.target.calibrated
    if options.verify_images is not None:
        verify_paths = list_images(options.verify_images, recursive=True, what="verification image")
        state.where = f"from {options.verify_images}"
    elif calibrated:
        state.calib_paths, verify_paths = held_out(state.calib_paths)
        state.where = "held-out calibration"
    else:
        state.where = "drawn scene"
    if calibrated:
        state.calib = calibration_batch(state.calib_paths, state.info, state.size, options.num_images).batch
    if verify_paths is None:
        state.verify = drawn_scenes(state.info, state.size)
    else:
        what = "verification" if options.verify_images else "held-out calibration"
        state.verify = calibration_batch(verify_paths, state.info, state.size, options.num_images, what).batch


def run_reference(state: State) -> None:
    """The FP32 logits on the verification images and, with --eval-list, the FP32 mIoU."""
    state.reference = logits(state.fp32, state.verify)
    if state.options.eval_list is not None:
        state.reference_miou = state.miou(state.fp32)


def convert(state: State) -> None:
    """The plain conversion (no repair), as a candidate file."""
    options, target = state.options, state.target
    for warning in target.begin():
        state.warnings.append(warning)
        notice(warning, state.log)
    # a target without calibration images ranks layers on the check images
    job = Job(source=state.src, source_model=state.source_model, info=state.info, target=target,
              method=target.method, calib=state.calib if state.calib is not None else state.verify,
              verify=state.verify, reference=state.reference,
              min_agreement=state.gate, max_miou_drop=options.max_miou_drop, gate_on=options.gate_on,
              miou=state.miou if options.eval_list is not None else None, reference_miou=state.reference_miou,
              log=state.log)
    state.search = Search(job, state.work)
    state.plain = state.search.convert("plain", state.src, job.method, [], False)


def judge_plain(state: State) -> None:
    state.search.judge(state.plain)


def repair_below_gate(state: State) -> None:
    """The plain candidate when it passed; else the repaired one (or GateError)."""
    state.outcome = repair(state.search, state.plain, state.options.fallback)


def describe(state: State) -> None:
    """The metadata the written model carries (precision, calibration, what repair did) and, for the report,
    the per-layer sensitivity of the plain conversion when repair did not already rank the layers."""
    outcome, info = state.outcome, state.info
    if state.want_sensitivity and not outcome.sensitivity:  # the report shows it even when nothing failed
        ranking_images = state.search.job.calib[:RANK_IMAGES]
        outcome.sensitivity = compare_layers(state.source_model, outcome.plain.model, ranking_images)
    chosen = outcome.chosen
    extra = state.target.describe(info.extra, chosen.method, state.calib)
    extra[EXTRA_PRECISION_REPAIR] = {
        "equalized": chosen.equalized, "method": chosen.method, "kept_fp32": chosen.kept_fp32,
        "agreement": round(chosen.verdict.agreement, 6), "gate": state.gate, "verification_images": len(state.verify),
        "agreement_lower_bound": round(chosen.verdict.lower_bound, 6), "gate_on": state.options.gate_on,
        "conversions": len(outcome.attempts)}
    state.written_info = info.with_(precision=state.target.precision, extra=extra)


def write(state: State) -> None:
    outcome = state.outcome
    state.wrote = True  # set before writing: a write that fails half-way leaves nothing either
    state.target.write(outcome.chosen.model, state.source_model, outcome.chosen.kept_fp32, state.written_info,
                       state.dst)


def verify_written(state: State) -> None:
    """Run the written file itself on the verification images (and the labelled list) and confirm every part
    of the gate on it; the report's figures come from here. A file that fails is removed (GateError)."""
    options, target = state.options, state.target
    with open_runner(state.dst, backend=target.backend) as runner:
        miou = (state.reference_miou, state.miou(runner)) if options.eval_list is not None else None
        state.written = judge(state.reference, logits(runner, state.verify), miou)
        target.read_back(runner, state.dst, state.source_model, state.outcome.chosen.kept_fp32)
        passed = state.written.passes(state.gate, options.max_miou_drop, options.gate_on)
        if passed and target.runs_here:
            state.latency = _latencies(state, runner)
    if not passed:
        what = state.search.job.what
        raise GateError(state.written.failure(f"the written {what} {state.dst.name}", state.gate,
                                              options.max_miou_drop, options.gate_on) + "; it was removed")


def make_report(state: State) -> None:
    """The report of the conversion (figures of the written file); a warning when it was judged on too few
    images to be sure of (said once: by the summary printed right after, not also as a notice)."""
    if state.written.uncertain:
        state.warnings.append(f"the agreement was judged on {state.written.images} verification image(s), fewer "
                              f"than {MIN_SURE_IMAGES}: the figure is uncertain (its lower bound "
                              f"{100 * state.written.lower_bound:.2f}%); verify on more images (--verify-images DIR)")
    state.report = _report(state, time.perf_counter() - state.started)


def save_report(state: State) -> None:
    if state.report_path is not None:
        write_report_json(state.report, state.report_path)


STEPS = (read_source, prepare_images, run_reference, convert, judge_plain, repair_below_gate, describe, write,
         verify_written, make_report, save_report)


def _latencies(state: State, written: Runner) -> dict[str, float]:
    """Median batch-1 latency of FP32, the plain conversion and (when repaired) the written model."""
    image, precision = state.verify[:1], state.target.precision
    result = {"fp32": latency_ms(state.fp32, image)}
    if state.outcome.chosen is state.outcome.plain:
        result[f"{precision} plain"] = latency_ms(written, image)
    else:
        with open_runner(state.outcome.plain.path, backend=state.target.backend) as plain:
            result[f"{precision} plain"] = latency_ms(plain, image)
        result[f"{precision} repaired"] = latency_ms(written, image)
    return result


def _checked(options: Conversion, dst) -> tuple[PrecisionTarget, float]:
    """(the conversion to the target, gate) of valid options; bad ones fail before any model is opened."""
    if options.gate_on not in GATE_ON:
        raise InputError(f"the gate is judged on one of {', '.join(GATE_ON)}, got {options.gate_on!r}")
    target = create_target(options.precision, options.target, options.method)
    target.check_output(dst)
    target.check_available()  # one line when a runtime it needs is missing
    if options.verify_images is not None and not Path(options.verify_images).is_dir():
        raise InputError(f"verification image folder not found: {options.verify_images}")
    gate = options.min_agreement if options.min_agreement is not None else target.default_gate
    return target, gate


def convert_verified(src: str | os.PathLike, dst: str | os.PathLike, options: Conversion, calib_images=(),
                     report_path: str | os.PathLike | None = None, log=lambda line: None) -> PrecisionReport:
    """Convert, verify, repair if needed (options.fallback 'auto'), write `dst` only when the gate holds and
    confirm it on the written file; a GateError (nothing left at `dst`) otherwise. Returns the report (also
    written to `report_path` as JSON). Any failure after the file is written removes it."""
    import tempfile

    target, gate = _checked(options, dst)
    check_writable(dst)
    with open_runner(src) as fp32, tempfile.TemporaryDirectory(prefix="psp-repair-") as work:
        state = State(src=Path(src), dst=Path(dst), options=options, calib_paths=[Path(p) for p in calib_images],
                      gate=gate, target=target, fp32=fp32, work=Path(work), log=log,
                      want_sensitivity=report_path is not None, report_path=report_path)
        try:
            for step in STEPS:
                step(state)
        except BaseException:
            if state.wrote:
                target.remove(state.dst)
            raise
    return state.report


def _report(state: State, seconds: float) -> PrecisionReport:
    outcome, options, target = state.outcome, state.options, state.target
    chosen, latency, precision = outcome.chosen, state.latency, target.precision
    warnings = list(state.warnings)
    final = latency.get(f"{precision} repaired", latency.get(f"{precision} plain"))
    if latency and final >= latency["fp32"]:
        warnings.append(f"{precision.upper()} ({final:.1f} ms) is not faster than FP32 ({latency['fp32']:.1f} ms) "
                        "on this machine")
    return PrecisionReport(
        precision=precision, target=target.name, source=str(state.src), output=str(state.dst),
        method=chosen.method, calibration_images=len(state.calib) if state.calib is not None else 0,
        verification=state.where, verification_images=len(state.verify), min_agreement=state.gate,
        max_miou_drop=options.max_miou_drop, before=outcome.plain.verdict.to_dict(), after=state.written.to_dict(),
        equalized=chosen.equalized, kept_fp32=chosen.kept_fp32,
        fp32_flops_share=flops_share(state.source_model, chosen.kept_fp32, state.size),
        attempts=attempts_as_dicts(outcome.attempts), sensitivity=[r.to_dict() for r in outcome.sensitivity],
        gate_on=options.gate_on, repair_continued_from=outcome.continued_from,
        latency_ms=latency, warnings=warnings, seconds=seconds, runtime_precision=target.runtime_precision,
        kept_fp32_by_runtime=target.kept_by_runtime)
