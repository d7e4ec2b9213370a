"""Verified FP16/INT8 conversion: the FP32 model and its conversion run on held-out images, the conversion is
gated on strict argmax agreement (and the mIoU drop on labelled images), repaired when below the gate, and
only a model that passes is written, with what repair did recorded in its metadata."""
from __future__ import annotations

import functools
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.calibration import DEFAULT_NUM_IMAGES, spread
from export.precision import (calibration_batch, calibration_size, check_int8_options, int8_extra, save_with_info,
                              source_info)
from export.precision_report import PrecisionReport, flops_share, write_report_json
from export.layerwise import compare_layers
from export.repair import RANK_IMAGES, Job, attempts_as_dicts, repair
from export.verdict import DEFAULT_GATES, evaluate_miou, run_logits, session
from pspcore.errors import InputError
from pspcore.files import check_writable, list_images
from pspcore.model_info import ModelInfo
from pspcore.preprocess import prepare_frame

DRAWN_SCENES = 6  # FP16 check images when none are given
LATENCY_RUNS = 5


@dataclass(frozen=True)
class Conversion:
    """Options of a verified conversion (the psp-export fp16 / int8 options)."""

    precision: str
    target: str | None = None  # INT8 only
    method: str = "entropy"
    num_images: int | None = DEFAULT_NUM_IMAGES
    size: tuple[int, int] | None = None
    verify_images: str | None = None
    min_agreement: float | None = None  # fraction; None: DEFAULT_GATES
    eval_list: str | None = None
    max_miou_drop: float | None = None
    fallback: str = "auto"
    latency: bool | None = None  # None: measured for the onnxruntime target


def held_out(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    """(calibration, verification): every 4th image held out, at least 2 of them (and never more than half)."""
    if len(paths) < 3:
        raise InputError(f"{len(paths)} calibration image(s) leave none to verify on: give at least 3, or "
                         "--verify-images DIR")
    held = spread(paths, max(len(paths) // 4, 2))
    return [p for p in paths if p not in held], held


def _verification_batch(src, info: ModelInfo, size, paths: list[Path] | None, num_images: int | None,
                        what: str) -> np.ndarray:
    if paths is None:  # FP16 without images: drawn street scenes, letterboxed like frames
        from export.parity import draw_scene

        shapes = [(size[0], size[1]), (size[0] * 3 // 4, size[1]), (size[0], size[1] * 2 // 3)]
        frames = [draw_scene(*shapes[i % 3], seed=500 + i) for i in range(DRAWN_SCENES)]
        return np.stack([prepare_frame(f, info, size)[0] for f in frames])
    return calibration_batch(src, paths, num_images, size, progress=False, what=what).batch


def _latency_ms(model, image: np.ndarray, runs: int = LATENCY_RUNS, target: str | None = None) -> float:
    sess = session(model, target=target)
    run_logits(sess, image)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run_logits(sess, image)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def convert_verified(src: str | os.PathLike, dst: str | os.PathLike, options: Conversion, calib_images=(),
                     report_path: str | os.PathLike | None = None, log=lambda line: None) -> PrecisionReport:
    """Convert, verify, repair if needed (options.fallback 'auto'), and write `dst` only when the gate holds;
    a GateError (nothing written) otherwise. Returns the report (also written to `report_path` as JSON)."""
    import onnx

    start = time.perf_counter()
    info = source_info(src)
    int8 = options.precision == "int8"
    if int8:
        check_int8_options(options.target, options.method)
    gate = options.min_agreement if options.min_agreement is not None else DEFAULT_GATES[options.precision]
    if int8 and options.target == "openvino":
        from export.openvino_target import check_ir_path

        check_ir_path(dst)
    check_writable(dst)
    size = calibration_size(src, info, options.size)
    calib_paths, verify_paths = list(calib_images), None
    if options.verify_images is not None:
        if not Path(options.verify_images).is_dir():
            raise InputError(f"verification image folder not found: {options.verify_images}")
        verify_paths = list_images(options.verify_images, recursive=True, what="verification image")
        where = f"from {options.verify_images}"
    elif int8:
        calib_paths, verify_paths = held_out([Path(p) for p in calib_paths])
        where = "held-out calibration"
    else:
        where = "drawn scene"
    calib = calibration_batch(src, calib_paths, options.num_images, size, progress=False).batch if int8 else None
    verify = _verification_batch(src, info, size, verify_paths, options.num_images,
                                 "verification" if options.verify_images else "held-out calibration")
    reference_sess = session(src)
    miou = None
    if options.eval_list is not None:
        miou = lambda sess: evaluate_miou(sess, options.eval_list, info, size)  # noqa: E731
    # FP16 has no calibration set: its ranking runs on the check images
    job = Job(source=Path(src), precision=options.precision, target=options.target if int8 else None,
              method=options.method if int8 else None, calib=calib if int8 else verify, verify=verify,
              reference=run_logits(reference_sess, verify), min_agreement=gate, max_miou_drop=options.max_miou_drop,
              miou=miou, reference_miou=miou(reference_sess) if miou else None, log=log)
    with tempfile.TemporaryDirectory(prefix="psp-repair-") as work:
        outcome = repair(job, Path(work), options.fallback)
        source_model = onnx.load(str(src))
        if report_path is not None and not outcome.sensitivity:  # the report shows it even when nothing failed
            outcome.sensitivity = compare_layers(source_model, outcome.plain_model, job.calib[:RANK_IMAGES])
        extra = int8_extra(info, options.target, outcome.method, calib) if int8 else dict(info.extra)
        extra["precision_repair"] = {
            "equalized": outcome.equalized, "method": outcome.method, "kept_fp32": outcome.kept_fp32,
            "agreement": round(outcome.verdict.agreement, 6), "gate": gate, "verification_images": len(verify),
            "conversions": len(outcome.attempts)}
        latency = {}
        if options.latency or (options.latency is None and options.target in ("onnxruntime", "openvino")):
            # the openvino target's models run on OpenVINO, FP32 measured there too
            timed = functools.partial(_latency_ms, target="openvino") if options.target == "openvino" else _latency_ms
            latency = {"fp32": timed(src, verify[:1]), "int8 plain": timed(outcome.plain_model, verify[:1])}
            if outcome.model is not outcome.plain_model:
                latency["int8 repaired"] = timed(outcome.model, verify[:1])
        save = save_with_info
        if int8 and options.target == "openvino":
            from export.openvino_target import save_ir as save
        save(outcome.model, info.with_(precision=options.precision, extra=extra), dst)
    warnings = []
    final = latency.get("int8 repaired", latency.get("int8 plain"))
    if latency and final >= latency["fp32"]:
        warnings.append(f"INT8 ({final:.1f} ms) is not faster than FP32 ({latency['fp32']:.1f} ms) on this machine")
    report = PrecisionReport(
        precision=options.precision, target=options.target if int8 else None, source=str(src), output=str(dst),
        method=outcome.method, calibration_images=len(calib) if int8 else 0, verification=where,
        verification_images=len(verify), min_agreement=gate, max_miou_drop=options.max_miou_drop,
        before=outcome.plain.to_dict(), after=outcome.verdict.to_dict(), equalized=outcome.equalized,
        kept_fp32=outcome.kept_fp32, fp32_flops_share=flops_share(source_model, outcome.kept_fp32, size),
        attempts=attempts_as_dicts(outcome.attempts), sensitivity=[r.to_dict() for r in outcome.sensitivity],
        latency_ms=latency, warnings=warnings, seconds=time.perf_counter() - start)
    if report_path is not None:
        write_report_json(report, report_path)
    return report
