"""The fp16 target: an FP16 ONNX model with FP32 inputs and outputs (NVIDIA ModelOpt AutoCast), judged by ONNX
Runtime; TensorRT builds it as it is (strongly typed)."""
from __future__ import annotations

import os
import re

from export.precision.graph import POOLING_PATTERN, output_region, require_modelopt
from export.precision.target import PrecisionTarget, register_target
from export.precision.verdict import FLOAT_GATE
from pspcore.errors import PSPError, first_line


def fp16_model(src: str | os.PathLike, exclude: tuple[str, ...] = (), source_model=None):
    """The in-memory FP16 copy of the FP32 model `src` with FP32 inputs/outputs (ModelOpt AutoCast; the
    verified conversion checks it before writing). The exact pooling and the output region stay FP32; AutoCast
    also keeps nodes whose values exceed the FP16-safe range on a reference run. `exclude`: node names (exact)
    kept FP32 as well (repair). `source_model`: `src` already loaded (saves reading it again)."""
    require_modelopt("FP16 conversion")
    import onnx
    from modelopt.onnx.autocast import convert_to_mixed_precision
    from modelopt.onnx.autocast.logging_config import configure_logging

    configure_logging("ERROR")  # its warnings (tiny weights flushed to zero, ...) are not actionable
    names = [*output_region(source_model if source_model is not None else onnx.load(str(src))), *exclude]
    patterns = [POOLING_PATTERN, *(re.escape(name) + "$" for name in names)]
    try:
        return convert_to_mixed_precision(str(src), low_precision_type="fp16", keep_io_types=True,
                                          nodes_to_exclude=patterns)
    except Exception as exc:  # AutoCast raises assorted errors on graphs it cannot type
        raise PSPError(f"FP16 conversion of {src} failed: {first_line(exc, with_type=True)}") from None


@register_target
class Fp16Target(PrecisionTarget):
    """Keeping a node in higher precision: AutoCast leaves it FP32 (nodes_to_exclude)."""

    precision = "fp16"
    help = "FP16 ONNX (ModelOpt AutoCast), judged on ONNX Runtime"
    default_gate = FLOAT_GATE
    builds_engine = True

    def convert(self, source, source_model, exclude, calib, method):
        return fp16_model(source, tuple(exclude), source_model)
