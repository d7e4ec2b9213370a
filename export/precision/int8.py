"""What every INT8 target shares: explicit Q/DQ nodes calibrated on images, held to the INT8 gate, and the
calibration recorded in the written model's metadata. Each target (export.precision.targets.int8_*) says how it
quantizes, which calibration methods it offers and where its Q/DQ sit."""
from __future__ import annotations

import tempfile
from abc import abstractmethod
from pathlib import Path

import numpy as np

from export.precision.target import PrecisionTarget
from export.precision.verdict import INT8_GATE
from pspcore.model_info import EXTRA_CALIBRATION, EXTRA_INT8_TARGET


class Int8Target(PrecisionTarget):
    """An INT8 target: `quantize` keeps the nodes named in `exclude` (exact names) in higher precision on top
    of the pooling and the output region."""

    precision = "int8"
    default_gate = INT8_GATE
    calibrated = True
    advice = " or convert to FP16 instead"

    @abstractmethod
    def quantize(self, src: Path, work: Path, batch: np.ndarray, method: str, exclude: tuple[str, ...] = ()):
        """The Q/DQ onnx.ModelProto of `src` calibrated on the preprocessed `batch` [N, 3, H, W]; `work`: a
        folder for the quantizer's files."""

    def convert(self, source, source_model, exclude, calib, method):
        with tempfile.TemporaryDirectory(prefix="psp-int8-") as work:
            return self.quantize(Path(source), Path(work), calib, method, tuple(exclude))

    def describe(self, extra, method, calib):
        return {**extra, EXTRA_INT8_TARGET: self.name,
                EXTRA_CALIBRATION: {"method": method, "images": len(calib), "size": list(calib.shape[2:])}}
