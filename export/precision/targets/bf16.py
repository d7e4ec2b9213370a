"""The bf16 target, for OpenVINO: the FP32 graph written as IR that asks OpenVINO's CPU plugin for bf16 inference,
with the regions that must not be rounded kept FP32 by OpenVINO's own marking. Nothing is cast here: the CPU plugin
converts an FP32 graph to bf16 when compiling it with the bf16 precision hint (on AMX / AVX512-BF16 CPUs).

- The precision lives in the IR's rt_info under OpenVINO's "runtime_options" section (INFERENCE_PRECISION_HINT),
  where a model keeps the properties it is meant to be compiled with. The CPU plugin of OpenVINO 2026.4 applies
  only its KV-cache and dynamic-quantization keys from that section by itself (intel_cpu Config::applyRtInfo),
  so our openvino runner reads the hint and passes it to compile_model
  (runtime.backends.openvino.recorded_precision).
- Kept nodes carry OpenVINO's "precise" attribute (ov::disable_fp16_compression; ov.save_model writes it as
  DisablePrecisionConversion "dynamic:f16"). The CPU plugin's Node sets keepOrigPrecision from it, and
  Graph::EnforceInferencePrecision leaves such nodes in f32 when it lowers the graph to bf16.
- The logits' bilinear upsampling is written as two MatMuls, y = R_h · x · R_wᵀ (resize_as_matmuls), like the
  exact pooling: on an AVX512-BF16 CPU without AMX, OpenVINO 2026.4 ran the marked logits Interpolate in bf16
  (issue 28) while the marked pooling MatMuls stayed f32 there and on AMX. Interpolate is on the list of node
  types EnforceInferencePrecision never spares as the graph's tail (worth bf16 for speed), so only the mark
  could keep it f32, and in 2026.4 on that CPU it did not (which step drops it was not pinned down: recent
  sources let the Interpolate node take its descriptors from its executor); MatMul's and FullyConnected's held.
  The matrices are built in the graph from the runtime sizes (constants once folded when the sizes are
  static), so dynamic shapes stay exact.
- Repair ranks layers on a model that rounds every compute node's inputs to bf16 in ONNX Runtime (a stand-in
  for the ranking only: the gate is always OpenVINO's own run of the IR).
So keeping a node in higher precision means marking its OpenVINO ops precise (and leaving it unrounded in the
stand-in)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from export.precision.graph import check_output_suffix, output_region, pooling_nodes
from export.precision.ir import WritesIR
from export.precision.target import PrecisionTarget, register_target
from export.precision.verdict import FLOAT_GATE
from pspcore.model_info import EXTRA_OPENVINO, ModelInfo
from runtime.backends.openvino import (
    IR_SUFFIX,
    PRECISION_HINT_KEY,
    RUNTIME_OPTIONS,
    cpu_has_bf16,
    import_openvino,
    read_model,
)

PRECISE = "precise_0"  # ov::disable_fp16_compression's rt_info key, set from Python as an empty string
# How the mark reads back from an IR: 2026.x serializes it as DisablePrecisionConversion, older releases as precise
PRECISE_READ_BACK = ("DisablePrecisionConversion_0", PRECISE)
ROUNDED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # what the CPU plugin runs in bf16 (with Interpolate)
UNMARKED = ("Parameter", "Result", "Constant")  # no arithmetic: nothing to keep in f32


NO_BF16 = ("this CPU has no bf16 (OpenVINO needs AMX or AVX512-BF16): OpenVINO runs the model in f32 here, so "
           "the gate result is for f32; the file runs in bf16 only on CPUs that have it")


def kept_nodes(source_model, exclude=()) -> list[str]:
    """ONNX node names kept FP32: the exact pooling, the output region (upsampling, argmax) and `exclude`."""
    names = [*pooling_nodes(source_model), *output_region(source_model), *exclude]
    return list(dict.fromkeys(names))


def ops_of(model, node) -> list:
    """The OpenVINO ops the ONNX frontend made from the ONNX `node`: it names the last one after the node (after
    its output when that is a graph output, e.g. `logits`) and the others `name/...` (a Conv with bias is
    Convolution `name/WithoutBiases` + Add `name`)."""
    outputs = set(node.output)
    return [op for op in model.get_ops() if op.get_type_name() not in UNMARKED and (
            op.get_friendly_name() == node.name or op.get_friendly_name().startswith(node.name + "/")
            or any(outputs & o.get_names() for o in op.outputs()))]


def _nodes(source_model, names) -> list:
    by_name = {n.name: n for n in source_model.graph.node}
    return [by_name[name] for name in names if name in by_name]


def bf16_ov_model(source_model, exclude=()):
    """The ov.Model of the FP32 onnx.ModelProto with bf16 recorded as its inference precision and the kept
    nodes (kept_nodes) marked precise."""
    from export.precision.ir import ov_model

    model = ov_model(source_model)
    model.set_rt_info("bf16", [RUNTIME_OPTIONS, PRECISION_HINT_KEY])
    kept = _nodes(source_model, kept_nodes(source_model, exclude))
    resize_as_matmuls(model, [n for n in kept if n.op_type == "Resize"])
    for node in kept:
        for op in ops_of(model, node):
            op.get_rt_info()[PRECISE] = ""
    return model


def resize_as_matmuls(model, resizes) -> list[str]:
    """Replace, in the ov.Model, the Interpolate made from each ONNX Resize node in `resizes` that is a 4-D
    bilinear align_corners resize by sizes (the logits' upsampling) with y = R_h · x · R_wᵀ, where row i of
    R (L_out x L_in) holds max(0, 1 - |i·(L_in-1)/(L_out-1) - j|): the same interpolation, as MatMuls, which
    the CPU plugin keeps in f32 when marked. The new ops are named `<resize>/...`, the last one takes the
    Interpolate's name and output names, so ops_of still finds them. Returns the ONNX names replaced."""
    replaced = []
    for node in resizes:
        for op in ops_of(model, node):
            if _bilinear_align_corners(op):
                _replace_output(op, _matmul_resize(op.input_value(0), op.input_value(1), node.name + "/"))
                replaced.append(node.name)
    if replaced:
        model.validate_nodes_and_infer_types()
    return replaced


def _bilinear_align_corners(op) -> bool:
    attrs = op.get_attributes() if op.get_type_name() == "Interpolate" else {}
    return (attrs.get("mode") in ("linear", "linear_onnx") and op.get_input_size() == 2
            and attrs.get("coordinate_transformation_mode") == "align_corners"
            and attrs.get("shape_calculation_mode") == "sizes" and not attrs.get("antialias")
            and not any(attrs.get("pads_begin", [])) and not any(attrs.get("pads_end", []))
            and op.get_input_partial_shape(0).rank.get_length() == 4)


def _matmul_resize(data, sizes, prefix: str):
    """R_h · data · R_wᵀ for NCHW `data` and the 4-vector `sizes`; the matrices from the runtime shapes."""
    import openvino.opset13 as ops

    def named(new, what):
        new.set_friendly_name(prefix + what)
        return new

    one, zero = ops.constant(np.float32(1)), ops.constant(np.float32(0))
    in_shape = named(ops.shape_of(data), "in_shape")

    def length(shape, axis, what):  # one entry of a shape vector as an f32 scalar
        picked = named(ops.gather(shape, ops.constant(np.int64(axis)), ops.constant(np.int64(0))), what)
        return named(ops.convert(picked, "f32"), what + "/f32")

    def matrix(axis, what):  # [L_out, L_in]
        l_in, l_out = length(in_shape, axis, what + "/in"), length(sizes, axis, what + "/out")
        step = named(ops.divide(named(ops.subtract(l_in, one), what + "/in_1"),
                                named(ops.maximum(named(ops.subtract(l_out, one), what + "/out_1"), one),
                                      what + "/out_1_min1")), what + "/step")
        out_column = named(ops.unsqueeze(named(ops.range(zero, l_out, one, "f32"), what + "/out_index"),
                                         ops.constant(np.int64(1))), what + "/out_column")
        source = named(ops.multiply(out_column, step), what + "/source")
        in_index = named(ops.range(zero, l_in, one, "f32"), what + "/in_index")
        distance = named(ops.abs(named(ops.subtract(source, in_index), what + "/offset")), what + "/distance")
        return named(ops.relu(named(ops.subtract(one, distance), what + "/weight")), what)

    rows = named(ops.matmul(matrix(2, "rows"), data, False, False), "rows_applied")
    return ops.matmul(rows, matrix(3, "cols"), False, True)


def _replace_output(op, new) -> None:
    """Let `new` stand in for `op`: its consumers, its friendly name and its output's tensor names."""
    new.set_friendly_name(op.get_friendly_name())
    names = op.output(0).get_names()
    for target in list(op.output(0).get_target_inputs()):
        target.replace_source_output(new.output(0))
    op.output(0).get_tensor().set_names(set())
    new.output(0).get_tensor().set_names(names)


def save_bf16_ir(source_model, exclude, info: ModelInfo, dst: str | os.PathLike) -> Path:
    from export.precision.ir import save_ir

    return save_ir(bf16_ov_model(source_model, exclude), info, dst)


def marked_nodes(model, source_model, names) -> list[str]:
    """Those of the ONNX node `names` (nodes of `source_model`) whose OpenVINO ops carry the precise mark in
    `model` (e.g. read back from a written IR)."""
    def marked(op) -> bool:
        return any(key in op.get_rt_info() for key in PRECISE_READ_BACK)

    return [node.name for node in _nodes(source_model, names) if any(marked(op) for op in ops_of(model, node))]


def bf16_rounded_model(source_model, exclude=()):
    """A copy of the FP32 onnx.ModelProto in which every compute node outside kept_nodes reads its inputs
    rounded to bf16 (Cast to bfloat16 and back): ONNX Runtime runs it, and the repair's layer ranking sees where
    bf16 rounding hurts. Weights are rounded like activations, as the CPU plugin stores them in bf16."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto()
    model.CopyFrom(source_model)
    kept = set(kept_nodes(source_model, exclude))
    floats = {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}
    floats |= {v.name for v in [*model.graph.input, *model.graph.value_info]
               if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    produced_float = _float_outputs(model) | floats
    nodes = []
    for node in model.graph.node:
        if node.op_type in ROUNDED_OPS and node.name not in kept:
            for i, name in enumerate(node.input):
                if name and name in produced_float:
                    rounded = f"{name}__bf16_for_{node.name}"
                    nodes += [helper.make_node("Cast", [name], [rounded + "_b"], name=rounded + "_to",
                                               to=TensorProto.BFLOAT16),
                              helper.make_node("Cast", [rounded + "_b"], [rounded], name=rounded + "_back",
                                               to=TensorProto.FLOAT)]
                    node.input[i] = rounded
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def _float_outputs(model) -> set[str]:
    """Names of the float tensors the graph computes (shape inference; compute nodes' outputs are float)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    return {v.name for v in [*inferred.graph.value_info, *inferred.graph.output]
            if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}


@register_target
class Bf16Target(WritesIR, PrecisionTarget):
    precision = "bf16"
    name = "openvino"
    help = "OpenVINO IR that OpenVINO's CPU plugin runs in bf16, judged on OpenVINO"
    default_gate = FLOAT_GATE
    ranking_note = ", its rounding simulated in ONNX Runtime"

    def __init__(self, method=None):
        super().__init__(method)
        self.verified_in: str | None = None  # what OpenVINO runs bf16 in on this CPU (bf16, or f32 without it)

    def check_output(self, dst) -> None:
        check_output_suffix(dst, IR_SUFFIX, "the bf16 conversion (OpenVINO IR)")

    def check_available(self) -> None:
        import_openvino()

    def begin(self) -> list[str]:
        self.verified_in = "bf16" if cpu_has_bf16() else "f32"
        return [] if self.verified_in == "bf16" else [NO_BF16]

    def convert(self, source, source_model, exclude, calib, method):
        return bf16_rounded_model(_loaded(source, source_model), tuple(exclude))

    def candidate(self, source, source_model, exclude, calib, method, info, stem):
        # OpenVINO lowers the FP32 graph itself: the candidate file is that graph as bf16 IR, and the model
        # kept in memory (for the layer ranking) its bf16-rounded stand-in
        source_model = _loaded(source, source_model)
        model = bf16_rounded_model(source_model, tuple(exclude))
        return model, save_bf16_ir(source_model, tuple(exclude), info, stem.with_suffix(IR_SUFFIX))

    def write(self, model, source_model, exclude, info, dst):
        return save_bf16_ir(source_model, tuple(exclude), info, dst)

    def describe(self, extra, method, calib):
        # what OpenVINO is asked for, and what the gate measured on this machine
        return {**extra, EXTRA_OPENVINO: {"inference_precision": "bf16", "verified_in": self.verified_in}}

    def read_back(self, runner, dst, source_model, exclude):
        self.runtime_precision = runner.hint
        self.kept_by_runtime = marked_nodes(read_model(dst), source_model, kept_nodes(source_model, exclude))


def _loaded(source, source_model):
    import onnx

    return source_model if source_model is not None else onnx.load(str(source))
