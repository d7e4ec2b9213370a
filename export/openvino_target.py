"""The openvino INT8 target: a Q/DQ ONNX model made for OpenVINO's CPU plugin, judged by OpenVINO itself (its
INT8 arithmetic differs from ONNX Runtime's, so a model verified on one is not assumed right on the other) and
written as OpenVINO IR (.xml + .bin) with the model's description in its rt_info.

Two quantizers make the Q/DQ model, both leaving the exact pooling and the output region in FP32 like the
other targets, and both taking the repair's node names to keep in FP32:
- "nncf": NNCF's post-training quantization on the ONNX model (its own range estimation and placement);
- "entropy", "max", "percentile": ONNX Runtime's quantizer (per-channel S8 weights, U8 activations), the very
  file the onnxruntime target writes, which OpenVINO fuses into its integer kernels as well.
The repair's ONNX-level machinery (equalization, method changes, FP32 fallback by node name) then works
unchanged; only where the candidate runs and how it is written differ."""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from pspcore.errors import InputError, PSPError
from pspcore.model_info import ModelInfo

OPENVINO_METHODS = ("entropy", "nncf", "max", "percentile")
IR_SUFFIX = ".xml"
THREADS = 2


def _openvino():
    try:
        import openvino
    except ImportError:
        raise PSPError("the openvino target needs OpenVINO: pip install 'pspnet-deploy[openvino]'") from None
    return openvino


def check_ir_path(dst: str | os.PathLike) -> None:
    if Path(dst).suffix.lower() != IR_SUFFIX:
        raise InputError(f"the openvino target writes OpenVINO IR: name the output <name>.xml (its weights go to "
                         f"<name>.bin beside it), not {Path(dst).name}")


def ov_model(model):
    """An ov.Model from an onnx.ModelProto (in memory) or a model file."""
    ov = _openvino()
    core = ov.Core()
    if isinstance(model, (str, os.PathLike)):
        return core.read_model(str(model))
    return core.read_model(model.SerializeToString())


class OpenVINOSession:
    """An OpenVINO CPU compiled model behind the two calls of ONNX Runtime's session that export.verdict uses
    (get_inputs()[0].name, run(None, feed)), so the verdict, the gate and the latency run on OpenVINO
    unchanged. FP32 parts run in FP32 (precision hint f32): what the openvino runtime backend does."""

    class _Input:
        def __init__(self, name: str):
            self.name = name

    def __init__(self, model, threads: int = THREADS):
        import openvino.properties as props
        import openvino.properties.hint as hints

        try:
            model = ov_model(model)
            self._compiled = _openvino().Core().compile_model(
                model, "CPU", {hints.inference_precision: "f32", props.inference_num_threads: threads})
        except PSPError:
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError with its own text
            first = next((ln for ln in str(exc).splitlines() if ln.strip() and "Exception from" not in ln), str(exc))
            raise PSPError(f"OpenVINO cannot compile the model: {first.strip()}") from None
        self._request = self._compiled.create_infer_request()
        self._name = model.input(0).get_any_name()

    def get_inputs(self):
        return [self._Input(self._name)]

    def run(self, _outputs, feed: dict) -> list[np.ndarray]:
        return [self._request.infer({0: next(iter(feed.values()))})[0].copy()]


def quantize_for_openvino(src: Path, batch: np.ndarray, method: str, exclude: tuple[str, ...] = (),
                          progress: bool = False):
    """The Q/DQ onnx.ModelProto of `src` for OpenVINO, calibrated on the preprocessed `batch`; `exclude`:
    node names kept FP32 on top of the pooling and the output region."""
    if method not in OPENVINO_METHODS:
        raise InputError(f"calibration method for openvino must be one of {', '.join(OPENVINO_METHODS)}, "
                         f"got {method!r}")
    if method != "nncf":
        from export.precision import _quantize_onnxruntime

        with tempfile.TemporaryDirectory(prefix="psp-int8-") as work:
            return _quantize_onnxruntime(Path(src), Path(work), batch, method, progress, tuple(exclude))
    return _quantize_nncf(Path(src), batch, tuple(exclude))


def _quantize_nncf(src: Path, batch: np.ndarray, exclude: tuple[str, ...]):
    try:
        import nncf
    except ImportError:
        raise PSPError("the nncf method needs NNCF: pip install 'pspnet-deploy[openvino]'") from None
    import onnx

    from export.precision import output_region, pooling_nodes

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
    """Write `model` (onnx.ModelProto or ov.Model) as IR at `dst` (.xml) and its .bin, with `info` in its
    rt_info; both files appear only when both are complete (written beside them, then renamed, .bin first)."""
    from runtime.backends.openvino import write_model_info

    check_ir_path(dst)
    ov = _openvino()
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


def read_ir_info(path: str | os.PathLike) -> ModelInfo:
    from runtime.backends.openvino import model_info, read_model

    return model_info(read_model(path), str(path))

