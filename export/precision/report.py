"""The report of a verified conversion: what was calibrated and checked on, the agreement before and after
repair, the nodes kept in FP32 and their share of the FLOPs, per-layer sensitivity and (ONNX Runtime target)
measured latency. Printed as a table (what it says about the target, the target tells), written as JSON."""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from export.precision.target import target_class
from pspcore.files import atomic_output

SHOWN_LAYERS = 8  # most sensitive layers on the terminal (all of them in the JSON)


@dataclass
class PrecisionReport:
    precision: str
    target: str | None
    source: str
    output: str
    method: str | None
    calibration_images: int
    verification: str  # where the held-out images came from
    verification_images: int
    min_agreement: float
    max_miou_drop: float | None
    before: dict
    after: dict
    equalized: bool
    kept_fp32: list[str]
    fp32_flops_share: float
    attempts: list[dict]
    sensitivity: list[dict] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    runtime_precision: str | None = None  # the precision the runtime compiled the written file in (OpenVINO)
    kept_fp32_by_runtime: list[str] = field(default_factory=list)  # BF16: nodes OpenVINO is told to keep FP32

    @property
    def repaired(self) -> bool:
        return len(self.attempts) > 1


def conv_flops(model, size: tuple[int, int]) -> dict[str, float]:
    """Multiply-adds x2 of every Conv node for one image at `size` (shape inference on a batch-1 copy)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    dims = copy.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, dims[1].dim_value or 3, *size)):
        dim.Clear()
        dim.dim_value = value
    inferred = onnx.shape_inference.infer_shapes(copy)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.output]}
    weights = {i.name: list(i.dims) for i in copy.graph.initializer}
    flops = {}
    for node in copy.graph.node:
        out, weight = shapes.get(node.output[0]), weights.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type == "Conv" and out and weight and all(out):
            flops[node.name] = 2.0 * float(math.prod(weight)) * out[2] * out[3]
    return flops


def flops_share(model, nodes: list[str], size: tuple[int, int]) -> float:
    flops = conv_flops(model, size)
    total = sum(flops.values())
    return sum(flops.get(n, 0.0) for n in nodes) / total if total else 0.0


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def format_report(report: PrecisionReport) -> str:
    """The terminal table: the attempts, then what was kept FP32, the most sensitive layers and latency."""
    target = target_class(report.precision, report.target)
    what = report.precision.upper() + (f" ({report.target})" if report.target else "")
    calibrated = (f"calibration {report.method} on {report.calibration_images} images, "
                  if report.calibration_images else "no calibration, ")  # FP16/BF16 need none
    lines = [f"{what}: {calibrated}verified on "
             f"{report.verification_images} {report.verification} images, gate {100 * report.min_agreement:g}%"
             + (f", mIoU drop <= {report.max_miou_drop:g} pts" if report.max_miou_drop is not None else ""),
             "", f"  {'step':24s} {'method':10s} {'CLE':4s} {'FP32 nodes':>10s} {'agreement':>10s} "
                 f"{'mIoU drop':>9s} {'seconds':>8s}  gate"]
    for a in report.attempts:
        drop = "-" if a["miou_drop"] is None else f"{a['miou_drop']:+.2f}"
        lines.append(f"  {a['step']:24s} {a['method'] or '-':10s} {'yes' if a['equalized'] else 'no':4s} "
                     f"{len(a['kept_fp32']):>10d} {_pct(a['agreement']):>10s} {drop:>9s} {a['seconds']:>8.1f}  "
                     f"{'pass' if a['passed'] else 'FAIL'}")
    kept = ", ".join(report.kept_fp32) if report.kept_fp32 else "nothing"
    lines += ["", f"kept in FP32 by repair: {kept} ({100 * report.fp32_flops_share:.1f}% of the conv FLOPs)"
                  + ("; cross-layer equalization applied" if report.equalized else "")]
    if report.kept_fp32_by_runtime:
        lines.append(f"kept FP32 inside OpenVINO (its 'precise' mark, read back from the IR): "
                     f"{len(report.kept_fp32_by_runtime)} nodes (the exact pooling, the output region"
                     + (" and the nodes above)" if report.kept_fp32 else ")"))
    if report.runtime_precision:
        lines.append(f"OpenVINO compiled the written file in {report.runtime_precision} on this CPU")
    if report.sensitivity:
        lines += ["", f"most sensitive layers (plain {report.precision.upper()}{target.ranking_note}, error added "
                      "by the layer):"]
        for row in sorted(report.sensitivity, key=lambda r: -r["jump"])[:SHOWN_LAYERS]:
            lines.append(f"  {row['node']:48s} rel. error {row['rel_error']:7.3f}  cosine {row['cosine']:6.3f}  "
                         f"added {row['jump']:+.3f}")
    if report.latency_ms:
        lines += ["", f"latency on this machine (CPU, {target.latency_where}, batch 1, median): "
                  + ", ".join(f"{k} {v:.1f} ms" for k, v in report.latency_ms.items())]
    lines += [f"warning: {w}" for w in report.warnings]
    return "\n".join(lines)


def write_report_json(report: PrecisionReport, path: str | os.PathLike) -> Path:
    data = {"schema": "psp-export-precision/1", **asdict(report), "repaired": report.repaired}
    with atomic_output(path, suffix=".json") as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2) + "\n")
    return Path(path)
