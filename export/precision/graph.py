"""What every precision target shares about the FP32 graph and its files. The precision lives in the file itself
(what TensorRT 11's strongly typed builds need, and what lets the same model be checked on a CPU); each target
(export.precision.targets) makes it its own way. Shared here: the regions kept FP32, the images they are
calibrated and checked on, and writing a model with the source's metadata (precision recorded)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from export.precision.calibration import DEFAULT_NUM_IMAGES, CalibrationSet, load_calibration_set
from pspcore.errors import InputError, PSPError, notice
from pspcore.files import atomic_output
from pspcore.geometry import resolve_input_size
from pspcore.precisions import converted
from pspcore.model_info import PROP_PREFIX, ModelInfo

ONNX_SUFFIX = ".onnx"
# The exact adaptive pooling (export/onnx/pooling.py: averaging matrices and the MatMuls applying them) keeps
# FP32: its sums over up to 90 positions are where FP16/INT8 rounding would shift every pyramid level.
POOLING_PATTERN = r".*/ppm/features\.\d+/features\.\d+\.0/"
# Ops that do the arithmetic; the nodes after the last of them (upsampling, argmax) stay FP32.
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def check_source(info: ModelInfo, src: str | os.PathLike) -> ModelInfo:
    """`info` of the model to convert, refused unless it is FP32 (a conversion starts from the FP32 export)."""
    if converted(info.precision):
        raise InputError(f"{src} is already an {info.precision} model; convert its FP32 model instead")
    return info


def output_region(model) -> list[str]:
    """Names of the nodes between the last compute op (the classifier conv) and the graph outputs: the
    upsampling of the logits and, for a labels model, the argmax. Kept FP32 so near-ties between classes
    are decided at full precision."""
    producer = {out: node for node in model.graph.node for out in node.output}
    region, todo = [], [o.name for o in model.graph.output]
    seen: set[str] = set()
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in seen or node.op_type in COMPUTE_OPS:
            continue
        seen.add(node.name)
        region.append(node.name)
        todo.extend(i for i in node.input if i)
    return region


def pooling_nodes(model) -> list[str]:
    return [n.name for n in model.graph.node if re.match(POOLING_PATTERN, n.name)]


def check_output_suffix(dst: str | os.PathLike, suffix: str, writer: str) -> None:
    """One rule for every conversion's output name: `writer` writes `suffix` files, and the name must say so."""
    if Path(dst).suffix.lower() != suffix:
        raise InputError(f"{writer} writes {suffix} files: name the output <name>{suffix}, not {Path(dst).name}")


def save_with_info(model, info: ModelInfo, dst: str | os.PathLike) -> Path:
    """Write `model` to `dst` atomically with `info` as its metadata (replacing any pspnet.* entries)."""
    import onnx

    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PROP_PREFIX)]
    del model.metadata_props[:]
    for key, value in [*kept, *info.to_props().items()]:
        model.metadata_props.add(key=key, value=value)
    with atomic_output(dst, suffix=ONNX_SUFFIX) as tmp:
        onnx.save(model, str(tmp))
    return Path(dst)


def require_modelopt(what: str) -> None:
    try:
        import modelopt.onnx  # noqa: F401
    except ImportError:
        raise PSPError(f"{what} needs NVIDIA ModelOpt: pip install 'pspnet-deploy[convert]' "
                       "(install torch first on CPU-only machines, see README)") from None


def calibration_size(src: str | os.PathLike, info: ModelInfo, size: tuple[int, int] | None) -> tuple[int, int]:
    """The input size calibration images are prepared at (pspcore.geometry's rule: --size, else the size the
    model records; the file is not loaded here, so a fixed shape is known through its recorded size)."""
    return resolve_input_size(None, info, size, model=str(src))


def calibration_batch(paths: list, info: ModelInfo, size: tuple[int, int],
                      num_images: int | None = DEFAULT_NUM_IMAGES, what: str = "calibration") -> CalibrationSet:
    """The images `paths` (up to `num_images`, spread over the set) prepared like runtime frames at `size`;
    unreadable files are skipped with a notice (`what` names the set in it)."""
    calib = load_calibration_set(list(paths), info, size, num_images, progress=False)
    if calib.skipped:
        names = ", ".join(f"{p.name} ({why})" for p, why in calib.skipped[:3])
        notice(f"skipped {len(calib.skipped)} unreadable {what} image(s): {names}"
               + (" ..." if len(calib.skipped) > 3 else ""))
    return calib
