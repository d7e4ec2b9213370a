"""FP16 and INT8 ONNX models made from an FP32 one. The precision lives in the file itself (what TensorRT 11's
strongly typed builds need, and what lets the same model be checked on a CPU): FP16 by ModelOpt AutoCast,
INT8 by explicit Q/DQ nodes - ModelOpt's placement for TensorRT, ONNX Runtime's for its CPU kernels.
The source model's metadata travels along, with the precision (and INT8 target) recorded."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from export.calibration import DEFAULT_NUM_IMAGES, load_calibration_set
from pspcore.errors import InputError, PSPError
from pspcore.files import atomic_output, require_file
from pspcore.model_info import PROP_PREFIX, ModelInfo
from pspcore.model_info import read_onnx_info

# The exact adaptive pooling (export/pooling.py: averaging matrices and the MatMuls applying them) keeps
# FP32: its sums over up to 90 positions are where FP16/INT8 rounding would shift every pyramid level.
POOLING_PATTERN = r".*/ppm/features\.\d+/features\.\d+\.0/"
# Ops that do the arithmetic; the nodes after the last of them (upsampling, argmax) stay FP32.
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
CALIBRATION_STRIDE = 2  # images ONNX Runtime calibrates at a time (histograms merge): bounds its memory
INT8_TARGETS = ("tensorrt", "onnxruntime", "openvino")
# openvino: export.openvino_target.OPENVINO_METHODS (ONNX Runtime's quantizer's methods, and NNCF)
REPAIR_METHODS = {"tensorrt": ("entropy", "max"), "onnxruntime": ("entropy", "max", "percentile"),
                  "openvino": ("entropy", "nncf", "max", "percentile")}
PERCENTILE = 99.99  # ONNX Runtime's percentile calibration keeps the 0.01..99.99% range


def source_info(src: str | os.PathLike) -> ModelInfo:
    """ModelInfo of an FP32 model to convert (defaults and a notice for models exported elsewhere)."""
    info = read_onnx_info(require_file(src, "ONNX model"))
    if info.precision != "fp32":
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


def save_with_info(model, info: ModelInfo, dst: str | os.PathLike) -> Path:
    """Write `model` to `dst` atomically with `info` as its metadata (replacing any pspnet.* entries)."""
    import onnx

    kept = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PROP_PREFIX)]
    del model.metadata_props[:]
    for key, value in [*kept, *info.to_props().items()]:
        model.metadata_props.add(key=key, value=value)
    with atomic_output(dst, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))
    return Path(dst)


def _modelopt(what: str):
    try:
        import modelopt.onnx  # noqa: F401
    except ImportError:
        raise PSPError(f"{what} needs NVIDIA ModelOpt: pip install 'pspnet-deploy[convert]' "
                       "(install torch first on CPU-only machines, see README)") from None


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike, *, keep_fp32: tuple[str, ...] = (POOLING_PATTERN,),
                 exclude: tuple[str, ...] = ()) -> Path:
    """FP16 copy of an FP32 ONNX model with FP32 inputs/outputs (ModelOpt AutoCast). Nodes whose names
    match a `keep_fp32` regex, and the output region, stay FP32; AutoCast also keeps nodes whose values
    exceed the FP16-safe range on a reference run. `exclude`: node names (exact) kept FP32 as well (repair)."""
    return save_with_info(fp16_model(src, exclude), source_info(src).with_(precision="fp16"), dst)


def fp16_model(src: str | os.PathLike, exclude: tuple[str, ...] = (), keep_fp32: tuple[str, ...] = (POOLING_PATTERN,)):
    """The in-memory FP16 model of `convert_fp16` (the verified conversion checks it before writing)."""
    source_info(src)
    _modelopt("FP16 conversion")
    import onnx
    from modelopt.onnx.autocast import convert_to_mixed_precision
    from modelopt.onnx.autocast.logging_config import configure_logging

    configure_logging("ERROR")  # its warnings (tiny weights flushed to zero, ...) are not actionable
    names = [*output_region(onnx.load(str(src))), *exclude]
    patterns = [*keep_fp32, *(re.escape(name) + "$" for name in names)]
    try:
        return convert_to_mixed_precision(str(src), low_precision_type="fp16", keep_io_types=True,
                                          nodes_to_exclude=patterns)
    except Exception as exc:  # AutoCast raises assorted errors on graphs it cannot type
        raise PSPError(f"FP16 conversion of {src} failed: {type(exc).__name__}: {exc}") from None


def calibration_size(src: str | os.PathLike, info: ModelInfo, size: tuple[int, int] | None) -> tuple[int, int]:
    """The input size calibration images are prepared at: --size, else the model's fixed or recorded size."""
    if size is not None:
        return tuple(size)
    if info.input_size is not None:
        return tuple(info.input_size)
    raise InputError(f"{src} has a dynamic input size and records none: pass --size HxW for calibration")


@contextlib.contextmanager
def _onnxruntime_restored():
    """ModelOpt's quantize() monkey-patches ONNX Runtime's calibrators for the rest of the process, which
    breaks a later plain quantize_static there (the onnxruntime target); put the originals back after it."""
    from onnxruntime.quantization import base_quantizer, calibrate, qdq_quantizer

    owners = [calibrate, calibrate.CalibraterBase, calibrate.MinMaxCalibrater, calibrate.HistogramCalibrater,
              calibrate.HistogramCollector, qdq_quantizer.QDQQuantizer, base_quantizer.BaseQuantizer]
    saved = [(owner, dict(vars(owner))) for owner in owners]
    try:
        yield
    finally:
        for owner, before in saved:
            for name in set(vars(owner)) - set(before):
                delattr(owner, name)
            for name, value in before.items():
                if vars(owner).get(name, None) is not value and name not in ("__dict__", "__weakref__"):
                    setattr(owner, name, value)


def _quantize_tensorrt(src: Path, work: Path, batch, method: str, exclude: tuple[str, ...] = ()):
    """ModelOpt's explicit Q/DQ for TensorRT: symmetric INT8 where TensorRT fuses it (convolutions), the exact
    pooling left unquantized. The unquantized rest stays FP32, not ModelOpt's default FP16: with FP16 there
    the model's outputs in ONNX Runtime were off by the whole logit range on the CPU, so its parity could not
    be checked without a GPU (measured on a small PSPNet; FP32 there: 98.5% argmax agreement)."""
    _modelopt("INT8 quantization for TensorRT")
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
        raise PSPError(f"INT8 quantization of {src} failed: {type(exc).__name__}: {exc}") from None
    return onnx.load(str(out))


class _Batches:
    """ONNX Runtime calibration reader over a preprocessed [N, 3, H, W] array, one image a step. ORT reads it
    in strides (`set_range`): it keeps every intermediate tensor of a stride in memory before folding them into
    its histograms, which for PSPNet-50 at 473x473 is about 1.5 GB an image."""

    def __init__(self, name: str, batch, progress: bool):
        from tqdm import tqdm

        self.name, self.batch = name, batch
        self.index, self.end = 0, len(batch)
        self.bar = tqdm(total=len(batch), desc="calibrating", unit="img", disable=not progress, leave=False)

    def __len__(self) -> int:
        return len(self.batch)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.index, self.end = start_index, min(end_index, len(self.batch))

    def get_next(self):
        if self.index >= self.end:
            if self.index >= len(self.batch):
                self.bar.close()
            return None
        self.index += 1
        self.bar.update(1)
        return {self.name: self.batch[self.index - 1:self.index]}

    def rewind(self):
        self.index, self.end = 0, len(self.batch)


def calibration_stride(n: int, most: int = CALIBRATION_STRIDE) -> int:
    """The largest divisor of `n` up to `most`: ORT needs the image count to divide by its stride."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


def _quantize_onnxruntime(src: Path, work: Path, batch, method: str, progress: bool = True,
                          exclude: tuple[str, ...] = ()):
    """ONNX Runtime's static QDQ quantization for its CPU kernels (QLinearConv and friends): per-channel S8
    weights, U8 activations, after its pre-processing (shape inference, graph optimisation). Node names
    survive the pre-processing, so `exclude` (exact names, kept FP32) refers to the source model's nodes."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared, out = work / "model.pre.onnx", work / "model.int8.onnx"
    try:
        quant_pre_process(str(src), str(prepared))
        model = onnx.load(str(prepared))
        reader = _Batches(model.graph.input[0].name, batch, progress)
        methods = {"entropy": CalibrationMethod.Entropy, "max": CalibrationMethod.MinMax,
                   "percentile": CalibrationMethod.Percentile}
        options = {"CalibStridedMinMax": calibration_stride(len(batch))}
        if method == "percentile":
            options["CalibPercentile"] = PERCENTILE
        with contextlib.redirect_stdout(sys.stderr):  # its calibrators print() progress
            quantize_static(str(prepared), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method], extra_options=options,
                            nodes_to_exclude=pooling_nodes(model) + output_region(model) + list(exclude))
    except Exception as exc:  # ONNX Runtime raises assorted errors
        raise PSPError(f"INT8 quantization of {src} failed: {type(exc).__name__}: {exc}") from None
    return onnx.load(str(out))


def check_int8_options(target: str, method: str) -> None:
    if target not in INT8_TARGETS:
        raise InputError(f"INT8 target must be one of {', '.join(INT8_TARGETS)}, got {target!r}")
    if method not in REPAIR_METHODS[target]:
        raise InputError(f"calibration method for {target} must be one of {', '.join(REPAIR_METHODS[target])}, "
                         f"got {method!r}")


def calibration_batch(src: str | os.PathLike, calib_images: list, num_images: int | None = DEFAULT_NUM_IMAGES,
                      size: tuple[int, int] | None = None, progress: bool = True, what: str = "calibration"):
    """The calibration set of `calib_images` (up to `num_images`, spread over the set) prepared like runtime
    frames; unreadable files are skipped with a notice (`what` names the set in it)."""
    info = source_info(src)
    calib = load_calibration_set(list(calib_images), info, calibration_size(src, info, size), num_images, progress)
    if calib.skipped:
        names = ", ".join(f"{p.name} ({why})" for p, why in calib.skipped[:3])
        print(f"notice: skipped {len(calib.skipped)} unreadable {what} image(s): {names}"
              + (" ..." if len(calib.skipped) > 3 else ""), file=sys.stderr)
    return calib


def int8_model(src: str | os.PathLike, batch, *, target: str = "tensorrt", method: str = "entropy",
               exclude: tuple[str, ...] = (), progress: bool = False):
    """The in-memory INT8 model of `src` calibrated on the preprocessed `batch`; `exclude`: node names
    (exact) kept FP32 on top of the pooling and output region (the repair's fallback)."""
    check_int8_options(target, method)
    with tempfile.TemporaryDirectory(prefix="psp-int8-") as work:
        if target == "tensorrt":
            return _quantize_tensorrt(Path(src), Path(work), batch, method, tuple(exclude))
        if target == "openvino":
            from export.openvino_target import quantize_for_openvino

            return quantize_for_openvino(Path(src), batch, method, tuple(exclude), progress)
        return _quantize_onnxruntime(Path(src), Path(work), batch, method, progress, tuple(exclude))


def int8_extra(info: ModelInfo, target: str, method: str, batch) -> dict:
    """The metadata an INT8 model carries about its making: target and calibration."""
    return {**info.extra, "int8_target": target,
            "calibration": {"method": method, "images": len(batch), "size": list(batch.shape[2:])}}


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, calib_images: list, *, target: str = "tensorrt",
                  method: str = "entropy", num_images: int | None = DEFAULT_NUM_IMAGES,
                  size: tuple[int, int] | None = None, progress: bool = True) -> Path:
    """INT8 copy of an FP32 ONNX model calibrated on `calib_images` (paths; up to `num_images` of them, spread
    over the set), prepared like runtime frames at the model's input size (or `size`). target 'tensorrt':
    ModelOpt Q/DQ for TensorRT engines; 'onnxruntime': Q/DQ that ONNX Runtime runs fast on CPUs. Unchecked:
    export.verified.convert_verified is the conversion that gates (and repairs) the result."""
    check_int8_options(target, method)
    info = source_info(src)
    calib = calibration_batch(src, calib_images, num_images, size, progress)
    model = int8_model(src, calib.batch, target=target, method=method, progress=progress)
    return save_with_info(model, info.with_(precision="int8", extra=int8_extra(info, target, method, calib.batch)), dst)
