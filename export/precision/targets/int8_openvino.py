"""The openvino INT8 target: a Q/DQ ONNX model made for OpenVINO's CPU plugin, judged by OpenVINO itself (its
INT8 arithmetic differs from ONNX Runtime's, so a model verified on one is not assumed right on the other) and
written as OpenVINO IR (.xml + .bin) with the model's description in its rt_info.

Two quantizers make the Q/DQ model, both leaving the exact pooling and the output region in FP32 like the
other targets, and both taking the repair's node names to keep in FP32:
- "nncf": NNCF's post-training quantization on the ONNX model (its own range estimation and placement);
- "entropy", "max", "percentile": ONNX Runtime's quantizer (per-channel S8 weights, U8 activations), the very
  file the onnxruntime target writes, which OpenVINO fuses into its integer kernels as well.
The repair's ONNX-level machinery (equalization, method changes, FP32 fallback by node name) then works
unchanged; only where the candidate runs (the openvino runtime backend, FP32 parts in f32) and how it is
written differ (OpenVinoInt8 below)."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np

from export.precision.int8 import Int8Target
from export.precision.ir import WritesIR, save_ir
from export.precision.target import register_target
from export.precision.targets.int8_onnxruntime import quantize_onnxruntime
from pspcore.errors import PSPError, first_line


def quantize_for_openvino(src: Path, work: Path, batch: np.ndarray, method: str, exclude: tuple[str, ...] = ()):
    """The Q/DQ onnx.ModelProto of `src` for OpenVINO, calibrated on the preprocessed `batch`; `exclude`:
    node names kept FP32 on top of the pooling and the output region (Int8Target.quantize)."""
    if method != "nncf":
        return quantize_onnxruntime(Path(src), Path(work), batch, method, tuple(exclude))
    return _quantize_nncf(Path(src), batch, tuple(exclude))


def _quantize_nncf(src: Path, batch: np.ndarray, exclude: tuple[str, ...]):
    try:
        import nncf
    except ImportError:
        raise PSPError("the nncf method needs NNCF: pip install 'pspnet-deploy[openvino]'") from None
    import onnx

    from export.precision.graph import output_region, pooling_nodes

    model = onnx.load(str(src))
    name = model.graph.input[0].name
    kept = [*pooling_nodes(model), *output_region(model), *exclude]
    dataset = nncf.Dataset([batch[i:i + 1] for i in range(len(batch))], lambda x: {name: x})
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return nncf.quantize(model, dataset, subset_size=len(batch),
                                 ignored_scope=nncf.IgnoredScope(names=kept, validate=False))
    except Exception as exc:  # NNCF raises assorted errors
        raise PSPError(f"INT8 quantization of {src} with NNCF failed: {first_line(exc, with_type=True)}") from None


@register_target
class OpenVinoInt8(WritesIR, Int8Target):
    name = "openvino"
    help = ("OpenVINO IR (.xml + .bin), quantized by ONNX Runtime's quantizer or NNCF (--method nncf), "
            "judged on OpenVINO")
    methods = ("entropy", "nncf", "max", "percentile")
    fallback_takes_producer = True
    runs_here = True
    latency_where = "fp32 on ONNX Runtime, int8 on OpenVINO"

    def quantize(self, src, work, batch, method, exclude=()):
        return quantize_for_openvino(src, work, batch, method, exclude)

    def write(self, model, source_model, exclude, info, dst):
        return save_ir(model, info, dst)
