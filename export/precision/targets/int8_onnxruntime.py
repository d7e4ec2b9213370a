"""The onnxruntime INT8 target: ONNX Runtime's static quantization (QDQ, per-channel S8 weights, U8 activations)
for its CPU kernels (QLinearConv and friends), judged by ONNX Runtime itself. Keeping a node in higher
precision: the quantizer leaves it FP32 (nodes_to_exclude), and as it puts a node's Q/DQ at the producer of
its input, that producer goes too."""
from __future__ import annotations

import contextlib
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from export.precision.graph import output_region, pooling_nodes
from export.precision.int8 import Int8Target
from export.precision.target import register_target
from pspcore.errors import PSPError, first_line

CALIBRATION_STRIDE = 2  # images ONNX Runtime calibrates at a time (histograms merge): bounds its memory
PERCENTILE = 99.99  # ONNX Runtime's percentile calibration keeps the 0.01..99.99% range


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
    slower U8U8 GEMM); and 7-bit weights (reduce_range): x86 CPUs without VNNI (AVX2, plain AVX512) multiply
    U8 x S8 pairs with vpmaddubsw, whose 16-bit sums saturate with full 8-bit weights, while 7-bit weights run
    the same kernels at the same speed. The measurements behind each choice: experiments.ort_int8_analysis,
    in docs/results.md ("ONNX Runtime's INT8 convolutions against its own GEMM rate")."""

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
        raise PSPError(f"INT8 quantization of {src} failed: {first_line(exc, with_type=True)}") from None
    return onnx.load(str(out))


@register_target
class OnnxRuntimeInt8(Int8Target):
    name = "onnxruntime"
    help = "Q/DQ that ONNX Runtime runs fast on CPUs"
    methods = ("entropy", "max", "percentile")
    fallback_takes_producer = True
    runs_here = True

    def quantize(self, src, work, batch, method, exclude=()):
        return quantize_onnxruntime(src, work, batch, method, exclude)
