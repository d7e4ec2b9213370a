"""The onnxruntime INT8 target's quantizer options (7-bit weights: no U8S8 saturation on AVX2 CPUs) and the
helpers of experiments.ort_int8_analysis (profile parsing, conv shapes, the labels tail)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest


def conv_weights(model) -> list[np.ndarray]:
    """The INT8 weights the model's Conv nodes dequantize (QDQ: initializer -> DequantizeLinear -> Conv)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consumers = {i for n in model.graph.node if n.op_type == "Conv" for i in n.input}
    return [numpy_helper.to_array(inits[n.input[0]]) for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.output[0] in consumers and n.input[0] in inits
            and inits[n.input[0]].data_type == 3]  # INT8


@pytest.fixture(scope="module")
def calibration(tiny_info):
    from export.scenes import sample_batch

    return sample_batch(tiny_info, (65, 65), 2)


def test_the_target_writes_7_bit_weights(tiny_onnx, calibration, tmp_path):
    from export.precision.targets.int8_onnxruntime import (ORT_QUANT_DEFAULTS, prepare_for_onnxruntime,
                                                           quantize_onnxruntime, quantize_prepared)

    model = quantize_onnxruntime(tiny_onnx[0], tmp_path, calibration, "max")
    weights = conv_weights(model)
    assert weights and max(int(np.abs(w).max()) for w in weights) <= 64  # 7 bits: pairs never saturate int16
    assert max(int(np.abs(w).max()) for w in weights) > 32  # ... and the 7 bits are used
    # garbage case: the same quantizer with full 8-bit weights goes past the 7-bit range
    prepared, out = tmp_path / "prepared.onnx", tmp_path / "eight.onnx"
    prepare_for_onnxruntime(tiny_onnx[0], prepared)
    quantize_prepared(prepared, out, calibration, "max", (), replace(ORT_QUANT_DEFAULTS, reduce_range=False))
    import onnx

    assert max(int(np.abs(w).max()) for w in conv_weights(onnx.load(str(out)))) > 64


def test_profile_events_drop_the_warm_up_and_keep_shapes():
    from experiments.ort_int8_analysis import Measured, SESSION_VARIANTS, _collect, conv_gemm_shape

    def event(us):
        return {"cat": "Node", "name": "c_kernel_time", "dur": us,
                "args": {"op_name": "QLinearConv", "input_type_shape": [{"uint8": [1, 8, 8, 16]}],
                         "output_type_shape": [{"uint8": [1, 8, 8, 32]}]}}

    measured = Measured(SESSION_VARIANTS[0], 2)
    _collect(measured, [{"cat": "Session", "name": "run", "dur": 1}, event(900.0), event(300.0), event(200.0)], 2)
    kernel = measured.kernels["c"]
    assert kernel.us == [300.0, 200.0] and kernel.ms == 0.2  # warm-up dropped; the best run counts
    # NHWC output [1, 8, 8, 32], weight OIHW [32, 16, 3, 3]: 64 pixels x (16 * 9) x 32 channels
    assert conv_gemm_shape(kernel, {"c": {"weight_shape": [32, 16, 3, 3]}}) == (64, 144, 32)
    assert conv_gemm_shape(kernel, {}) is None  # no weight shape known: not counted


def test_appended_labels_are_the_argmax_of_the_logits(tiny_onnx, calibration, tmp_path):
    import onnxruntime as ort

    from experiments.ort_int8_analysis import append_labels

    append_labels(tiny_onnx[0], tmp_path / "labels.onnx")
    run = {p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (tiny_onnx[0],
                                                                                         tmp_path / "labels.onnx")}
    logits, labels = (s.run(None, {s.get_inputs()[0].name: calibration})[0] for s in run.values())
    assert labels.dtype == np.uint8 and labels.shape == logits.shape[:1] + logits.shape[2:]
    assert np.array_equal(labels, logits.argmax(1))


def test_each_source_is_pre_processed_once(tiny_onnx, tmp_path, monkeypatch):
    """A conversion quantizes the same file several times (plain, other methods, fallbacks): ONNX Runtime's
    pre-processing runs once per file version; a changed file is pre-processed again; old ones are removed."""
    import os
    import shutil

    import export.precision.targets.int8_onnxruntime as int8

    calls = []
    real = int8.prepare_for_onnxruntime
    monkeypatch.setattr(int8, "prepare_for_onnxruntime", lambda src, dst: (calls.append(src), real(src, dst)))
    prepared = int8._PreparedModels(keep=1)
    source = shutil.copyfile(tiny_onnx[0], tmp_path / "m.onnx")
    first = prepared(source)
    assert prepared(source) == first and len(calls) == 1 and first.is_file()
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10 ** 9))  # the file changed
    second = prepared(source)
    assert second != first and len(calls) == 2 and second.is_file() and not first.exists()



def test_the_target_is_the_same_after_a_tensorrt_conversion_in_the_process(tiny_onnx, calibration, tmp_path,
                                                                             monkeypatch):
    """ModelOpt's quantize (the tensorrt target) patches ONNX Runtime's quantizer for the rest of the process and
    adds its operators to ORT's registries; after it, the onnxruntime target must still write what it writes in
    a fresh process."""
    pytest.importorskip("modelopt.onnx")
    import contextlib

    import export.precision.targets.int8_tensorrt
    from export.precision.targets.int8_onnxruntime import quantize_onnxruntime
    from export.precision.targets.int8_tensorrt import _onnxruntime_restored, _quantize_tensorrt
    from pspcore.errors import PSPError

    def nodes(model):
        return sorted((n.op_type, n.name) for n in model.graph.node)

    for name in ("before", "trt", "after", "patched", "trt-patching"):
        (tmp_path / name).mkdir()
    before = quantize_onnxruntime(tiny_onnx[0], tmp_path / "before", calibration, "max")
    _quantize_tensorrt(tiny_onnx[0], tmp_path / "trt", calibration, "max")
    after = quantize_onnxruntime(tiny_onnx[0], tmp_path / "after", calibration, "max")
    assert nodes(after) == nodes(before)
    # garbage case: with ModelOpt's changes left in place, the same call fails or writes another model (the
    # outer, real restore puts the process back as it was for the tests after this one)
    with _onnxruntime_restored():
        monkeypatch.setattr(export.precision.targets.int8_tensorrt, "_onnxruntime_restored", contextlib.nullcontext)
        _quantize_tensorrt(tiny_onnx[0], tmp_path / "trt-patching", calibration, "max")
        try:
            patched = nodes(quantize_onnxruntime(tiny_onnx[0], tmp_path / "patched", calibration, "max"))
        except PSPError as exc:  # ModelOpt's calibrators: "Quantization parameters are not specified for ..."
            patched = str(exc)
        monkeypatch.undo()
    assert patched != nodes(before)
