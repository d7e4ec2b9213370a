"""The tensorrt INT8 target: NVIDIA ModelOpt's explicit Q/DQ placement for TensorRT's strongly typed builds,
judged by ONNX Runtime on the CPU (the same Q/DQ arithmetic; TensorRT itself needs a GPU). Keeping a node in
higher precision: ModelOpt leaves it unquantized (nodes_to_exclude)."""
from __future__ import annotations

import contextlib
import re
import shutil
import sys
from pathlib import Path

from export.precision.graph import POOLING_PATTERN, require_modelopt
from export.precision.int8 import Int8Target
from export.precision.target import register_target
from pspcore.errors import PSPError, first_line


@contextlib.contextmanager
def _onnxruntime_restored():
    """ModelOpt's quantize() monkey-patches ONNX Runtime's calibrators and adds its own operators to ORT's
    quantization registries for the rest of the process, which changes what a later plain quantize_static
    writes there (the onnxruntime target would place other Q nodes than in a fresh process); put the originals
    back after it. The registries are restored in place: ORT's quantize
    module holds the same dict objects."""
    from onnxruntime.quantization import base_quantizer, calibrate, qdq_quantizer, registry

    owners = [calibrate, calibrate.CalibraterBase, calibrate.MinMaxCalibrater, calibrate.HistogramCalibrater,
              calibrate.HistogramCollector, qdq_quantizer.QDQQuantizer, base_quantizer.BaseQuantizer]
    saved = [(owner, dict(vars(owner))) for owner in owners]
    tables = [(table, dict(table)) for name, table in vars(registry).items()
              if name.endswith("Registry") and isinstance(table, dict)]
    try:
        yield
    finally:
        for table, before in tables:
            table.clear()
            table.update(before)
        for owner, before in saved:
            for name in set(vars(owner)) - set(before):
                delattr(owner, name)
            for name, value in before.items():
                if vars(owner).get(name, None) is not value and name not in ("__dict__", "__weakref__"):
                    setattr(owner, name, value)


def _quantize_tensorrt(src: Path, work: Path, batch, method: str, exclude: tuple[str, ...] = ()):
    """ModelOpt's explicit Q/DQ for TensorRT: symmetric INT8 where TensorRT fuses it (convolutions), the exact
    pooling left unquantized. The unquantized rest stays FP32, not ModelOpt's default FP16: ONNX Runtime's CPU
    kernels run that FP16 rest wrongly (outputs off by the whole logit range), and the model must be judged
    there, without a GPU."""
    require_modelopt("INT8 quantization for TensorRT")
    import onnx
    from modelopt.onnx.quantization import quantize

    local, out = work / "model.onnx", work / "model.int8.onnx"
    shutil.copyfile(src, local)  # ModelOpt writes intermediate files beside its input
    try:
        with _onnxruntime_restored(), contextlib.redirect_stdout(sys.stderr):  # ORT calibrators print() progress
            quantize(str(local), quantize_mode="int8", calibration_data=batch, calibration_method=method,
                     calibration_eps=["cpu"], output_path=str(out),
                     nodes_to_exclude=[POOLING_PATTERN, *(re.escape(name) + "$" for name in exclude)],
                     high_precision_dtype="fp32", log_level="ERROR")
    except Exception as exc:  # ModelOpt and ONNX Runtime raise assorted errors
        raise PSPError(f"INT8 quantization of {src} failed: {first_line(exc, with_type=True)}") from None
    return onnx.load(str(out))


@register_target
class TensorRTInt8(Int8Target):
    name = "tensorrt"
    help = "ModelOpt Q/DQ for TensorRT engines"
    methods = ("entropy", "max")
    builds_engine = True

    def quantize(self, src, work, batch, method, exclude=()):
        return _quantize_tensorrt(src, work, batch, method, exclude)
