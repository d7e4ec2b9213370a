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
written differ (export.precision.int8's INT8_TARGETS entry)."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from pspcore.errors import PSPError
from pspcore.model_info import ModelInfo



def ov_model(model):
    """An ov.Model from an in-memory onnx.ModelProto."""
    from runtime.backends.openvino import import_openvino

    return import_openvino().Core().read_model(model.SerializeToString())


def quantize_for_openvino(src: Path, work: Path, batch: np.ndarray, method: str, exclude: tuple[str, ...] = ()):
    """The Q/DQ onnx.ModelProto of `src` for OpenVINO, calibrated on the preprocessed `batch`; `exclude`:
    node names kept FP32 on top of the pooling and the output region (export.precision.int8's quantize signature)."""
    if method != "nncf":
        from export.precision.int8 import quantize_onnxruntime

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
        raise PSPError(f"INT8 quantization of {src} with NNCF failed: {type(exc).__name__}: {exc}") from None


def save_ir(model, info: ModelInfo, dst: str | os.PathLike) -> Path:
    """Write `model` (onnx.ModelProto or ov.Model) as IR at `dst` (.xml: the openvino target checks the name
    before converting) and its .bin, with `info` in its rt_info; both files appear only when both are complete
    (written beside them, then renamed, .bin first)."""
    from runtime.backends.openvino import import_openvino, write_model_info

    ov = import_openvino()
    dst = Path(dst)
    model = model if isinstance(model, ov.Model) else ov_model(model)
    write_model_info(model, info)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dst.stem}.", dir=dst.parent) as work:
        tmp = Path(work) / dst.name
        # compress_to_fp16=False: the FP32 parts keep their exact weights (the pooling matrices, the logits)
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), dst.with_suffix(".bin"))
        os.replace(tmp, dst)
    return dst
