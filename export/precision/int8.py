"""INT8 ONNX models with explicit Q/DQ nodes, one entry per target in INT8_TARGETS: how that target
quantizes (ModelOpt's placement for TensorRT, ONNX Runtime's for its CPU kernels), which calibration methods
it offers, and how it keeps nodes in higher precision. A new target is one more Int8Target here."""
from __future__ import annotations

import contextlib
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from export.precision.graph import POOLING_PATTERN, check_output_suffix, output_region, pooling_nodes, require_modelopt
from pspcore.errors import InputError, PSPError
from runtime.backends.openvino import IR_SUFFIX  # the .xml, its weights in the .bin beside it
from pspcore.model_info import ModelInfo

CALIBRATION_STRIDE = 2  # images ONNX Runtime calibrates at a time (histograms merge): bounds its memory
PERCENTILE = 99.99  # ONNX Runtime's percentile calibration keeps the 0.01..99.99% range


@contextlib.contextmanager
def _onnxruntime_restored():
    """ModelOpt's quantize() monkey-patches ONNX Runtime's calibrators and adds its own operators to ORT's
    quantization registries for the rest of the process, which changes a later plain quantize_static there
    (the onnxruntime target: 62 instead of 48 Q nodes on the tiny test network, unlike in a fresh process);
    put the originals back after it. The registries are restored in place: ORT's quantize
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
    pooling left unquantized. The unquantized rest stays FP32, not ModelOpt's default FP16: with FP16 there
    the model's outputs in ONNX Runtime were off by the whole logit range on the CPU, so its parity could not
    be checked without a GPU (measured on a small PSPNet; FP32 there: 98.5% argmax agreement)."""
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
        raise PSPError(f"INT8 quantization of {src} failed: {type(exc).__name__}: {exc}") from None
    return onnx.load(str(out))


class _Batches:
    """ONNX Runtime calibration reader over a preprocessed [N, 3, H, W] array, one image a step. ORT reads it
    in strides (`set_range`): it keeps every intermediate tensor of a stride in memory before folding them into
    its histograms, which for PSPNet-50 at 473x473 is about 1.5 GB an image."""

    def __init__(self, name: str, batch):
        self.name, self.batch = name, batch
        self.index, self.end = 0, len(batch)

    def __len__(self) -> int:
        return len(self.batch)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.index, self.end = start_index, min(end_index, len(self.batch))

    def get_next(self):
        if self.index >= self.end:
            return None
        self.index += 1
        return {self.name: self.batch[self.index - 1:self.index]}

    def rewind(self):
        self.index, self.end = 0, len(self.batch)


def calibration_stride(n: int, most: int = CALIBRATION_STRIDE) -> int:
    """The largest divisor of `n` up to `most`: ORT needs the image count to divide by its stride."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


@dataclass(frozen=True)
class OrtQuantOptions:
    """How ONNX Runtime's quantizer writes the model. The defaults are the onnxruntime target's: QDQ (ORT
    fuses it into QLinearConv), per-channel symmetric S8 weights and U8 activations, which on x86 sends
    QLinearConv to MLAS's fastest kernel (ConvSym, requantization fused; U8 weights fall back to im2col and a
    U8U8 GEMM, 1.5-1.8x slower on AVX2); and 7-bit weights (reduce_range): x86 CPUs without VNNI (AVX2, plain
    AVX512) multiply U8 x S8 pairs with vpmaddubsw, whose 16-bit sums saturate with full 8-bit weights. On the
    demo's trained PSPNet-18 that saturation was most of the INT8 error (99.43% of the FP32 labels kept vs
    99.92% with 7-bit weights or ORT's exact U8U8 mode), while 7-bit weights run the same kernels at the same
    speed. experiments.ort_int8_analysis measures all of it."""

    quant_format: str = "qdq"  # or "qoperator"
    per_channel: bool = True
    weight_type: str = "s8"  # or "u8"
    activation_type: str = "u8"  # or "s8" (ORT turns S8 activations back into U8 on x86)
    reduce_range: bool = True  # 7-bit weights: no U8S8 saturation on x86 CPUs without VNNI


ORT_QUANT_DEFAULTS = OrtQuantOptions()


def prepare_for_onnxruntime(src: Path, prepared: Path) -> None:
    """ONNX Runtime's quantization pre-processing (shape inference, graph optimisation) of `src`."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(prepared))


class _PreparedModels:
    """ONNX Runtime's pre-processing of each source file, done once per process: a verified conversion
    quantizes the same FP32 (or equalized) file several times (plain, other methods, FP32 fallbacks), and the
    pre-processing is a fixed cost per file (shape inference, graph optimisation, two saves of the whole model).
    Keyed by the file's path, size and modification time; the `keep` most recent stay, in a temporary folder
    removed when the process ends."""

    def __init__(self, keep: int = 2):
        self.keep, self.paths, self.made = keep, {}, 0
        self.folder: tempfile.TemporaryDirectory | None = None

    def __call__(self, src: Path) -> Path:
        stat = src.stat()
        key = (str(src.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self.paths:
            self.folder = self.folder or tempfile.TemporaryDirectory(prefix="psp-ort-prepared-")
            self.made += 1
            path = Path(self.folder.name) / f"{self.made}.pre.onnx"
            prepare_for_onnxruntime(src, path)
            self.paths[key] = path
            while len(self.paths) > self.keep:
                self.paths.pop(next(iter(self.paths))).unlink(missing_ok=True)
        return self.paths[key]


prepared_for_onnxruntime = _PreparedModels()


def quantize_prepared(prepared: Path, out: Path, batch, method: str, exclude: tuple[str, ...] = (),
                      options: OrtQuantOptions = ORT_QUANT_DEFAULTS, calibration_cache: Path | None = None,
                      keep_fp32: Callable | None = None) -> None:
    """ONNX Runtime's static quantization of a pre-processed model into `out`. `calibration_cache`: a JSON
    file of tensor ranges ORT reuses (and writes when missing), so variants of one model calibrate once.
    `keep_fp32(model)`: the node names kept FP32 besides `exclude` (default: the exact pooling and the
    output region)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(prepared), load_external_data=False)
    reader = _Batches(model.graph.input[0].name, batch)
    methods = {"entropy": CalibrationMethod.Entropy, "max": CalibrationMethod.MinMax,
               "percentile": CalibrationMethod.Percentile}
    types = {"s8": QuantType.QInt8, "u8": QuantType.QUInt8}
    extra = {"CalibStridedMinMax": calibration_stride(len(batch))}
    if method == "percentile":
        extra["CalibPercentile"] = PERCENTILE
    kept = keep_fp32(model) if keep_fp32 is not None else pooling_nodes(model) + output_region(model)
    with contextlib.redirect_stdout(sys.stderr):  # its calibrators print() progress
        quantize_static(str(prepared), str(out), reader,
                        quant_format=QuantFormat.QDQ if options.quant_format == "qdq" else QuantFormat.QOperator,
                        per_channel=options.per_channel, reduce_range=options.reduce_range,
                        activation_type=types[options.activation_type], weight_type=types[options.weight_type],
                        calibrate_method=methods[method], extra_options=extra,
                        nodes_to_exclude=kept + list(exclude),
                        calibration_cache_path=None if calibration_cache is None else str(calibration_cache))


def quantize_onnxruntime(src: Path, work: Path, batch, method: str, exclude: tuple[str, ...] = ()):
    """ONNX Runtime's static QDQ quantization for its CPU kernels (QLinearConv and friends) with
    ORT_QUANT_DEFAULTS (per-channel 7-bit S8 weights, U8 activations), after its pre-processing (once per
    source file). Node names survive the pre-processing, so `exclude` (exact names, kept FP32) refers to the
    source model's nodes."""
    import onnx

    out = work / "model.int8.onnx"
    try:
        quantize_prepared(prepared_for_onnxruntime(Path(src)), out, batch, method, exclude)
    except Exception as exc:  # ONNX Runtime raises assorted errors
        raise PSPError(f"INT8 quantization of {src} failed: {type(exc).__name__}: {exc}") from None
    return onnx.load(str(out))


# quantize(src, work folder, calibration batch [N, 3, H, W], method, exclude) -> onnx.ModelProto
Quantize = Callable[[Path, Path, np.ndarray, str, tuple], object]


@dataclass(frozen=True)
class Int8Target:
    """One INT8 target. `methods`: its calibration methods, the default first (repair tries the others in
    this order). `quantize` keeps the nodes named in `exclude` (exact names) in higher precision on top of the
    pooling and output region. `fallback_takes_producer`: its quantizer puts a node's Q/DQ at the producer of
    its input, so the FP32 fallback of a node must take that producer too. `runs_here`: the model runs fast
    on this machine's CPU, so the report measures its latency. `help`: the --target help text. `backend`: the
    runtime backend that judges the candidates and the written file (its INT8 arithmetic is the one that
    counts). `save(model, info, dst)` writes the chosen model, `suffix` the file name it takes."""
    name: str
    methods: tuple[str, ...]
    quantize: Quantize
    fallback_takes_producer: bool
    runs_here: bool
    help: str
    backend: str = "onnxruntime"
    save: Callable | None = None  # None: ONNX with the model's metadata (export.precision.graph.save_with_info)
    suffix: str = ".onnx"

    def check_output(self, dst) -> None:
        check_output_suffix(dst, self.suffix, f"the {self.name} target")

    def write(self, model, info: ModelInfo, dst) -> Path:
        from export.precision.graph import save_with_info

        return (self.save or save_with_info)(model, info, dst)


def _quantize_openvino(src: Path, work: Path, batch, method: str, exclude: tuple[str, ...] = ()):
    from export.precision.openvino_target import quantize_for_openvino

    return quantize_for_openvino(src, work, batch, method, exclude)


def _save_ir(model, info: ModelInfo, dst) -> Path:
    from export.precision.openvino_target import save_ir

    return save_ir(model, info, dst)


INT8_TARGETS: dict[str, Int8Target] = {t.name: t for t in (
    Int8Target("tensorrt", ("entropy", "max"), _quantize_tensorrt, fallback_takes_producer=False, runs_here=False,
               help="ModelOpt Q/DQ for TensorRT engines"),
    Int8Target("onnxruntime", ("entropy", "max", "percentile"), quantize_onnxruntime, fallback_takes_producer=True,
               runs_here=True, help="Q/DQ that ONNX Runtime runs fast on CPUs"),
    Int8Target("openvino", ("entropy", "nncf", "max", "percentile"), _quantize_openvino,
               fallback_takes_producer=True, runs_here=True, backend="openvino", save=_save_ir, suffix=IR_SUFFIX,
               help="OpenVINO IR (.xml + .bin), quantized by ONNX Runtime's quantizer or NNCF (--method nncf), "
                    "judged on OpenVINO"),
)}


def int8_target(name: str, method: str | None = None) -> Int8Target:
    """The target called `name`, checked to offer `method` (when given)."""
    if name not in INT8_TARGETS:
        raise InputError(f"INT8 target must be one of {', '.join(INT8_TARGETS)}, got {name!r}")
    target = INT8_TARGETS[name]
    if method is not None and method not in target.methods:
        raise InputError(f"calibration method for {name} must be one of {', '.join(target.methods)}, "
                         f"got {method!r}")
    return target


def all_methods() -> list[str]:
    """Every calibration method some target offers (the --method choices), in table order."""
    return list(dict.fromkeys(m for t in INT8_TARGETS.values() for m in t.methods))


def int8_model(src, batch: np.ndarray, target: Int8Target, method: str, exclude: tuple[str, ...] = ()):
    """The in-memory INT8 model of `src` calibrated on the preprocessed `batch` for `target`; `exclude`: node
    names (exact) kept in higher precision (the repair's fallback)."""
    with tempfile.TemporaryDirectory(prefix="psp-int8-") as work:
        return target.quantize(Path(src), Path(work), batch, method, tuple(exclude))


def int8_extra(info: ModelInfo, target: str, method: str, batch: np.ndarray) -> dict:
    """The metadata an INT8 model carries about its making: target and calibration."""
    return {**info.extra, "int8_target": target,
            "calibration": {"method": method, "images": len(batch), "size": list(batch.shape[2:])}}
