"""OpenVINO IR as a precision target's file: the .xml and its weights in the .bin beside it, with the model's
description in its rt_info. Shared by the targets that write IR (bf16, INT8 for openvino)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pspcore.model_info import ModelInfo
from runtime.backends.openvino import IR_SUFFIX, WEIGHTS_SUFFIX


def ov_model(model):
    """An ov.Model from an in-memory onnx.ModelProto."""
    from runtime.backends.openvino import import_openvino

    return import_openvino().Core().read_model(model.SerializeToString())


def save_ir(model, info: ModelInfo, dst: str | os.PathLike) -> Path:
    """Write `model` (onnx.ModelProto or ov.Model) as IR at `dst` (.xml: the target checks the name before
    converting) and its .bin, with `info` in its rt_info; both files appear only when both are complete
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
        for file, written in zip(ir_files(dst)[::-1], ir_files(tmp)[::-1]):
            os.replace(written, file)
    return dst


def ir_files(xml: str | os.PathLike) -> list[Path]:
    """The files of the IR at `xml`: the .xml and the weights beside it."""
    return [Path(xml), Path(xml).with_suffix(WEIGHTS_SUFFIX)]


class WritesIR:
    """Mixin of a precision target whose file is OpenVINO IR, judged by OpenVINO."""

    suffix = IR_SUFFIX
    backend = "openvino"

    def files(self, path: str | os.PathLike) -> list[Path]:
        return ir_files(path)
