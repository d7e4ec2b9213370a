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
- Repair ranks layers on a model that rounds every compute node's inputs to bf16 in ONNX Runtime (a stand-in
  for the ranking only: the gate is always OpenVINO's own run of the IR).
So keeping a node in higher precision means marking its OpenVINO ops precise (and leaving it unrounded in the
stand-in)."""
from __future__ import annotations

import os
from pathlib import Path

from export.precision.graph import check_output_suffix, output_region, pooling_nodes
from export.precision.ir import WritesIR
from export.precision.target import PrecisionTarget, register_target
from export.precision.verdict import FLOAT_GATE
from pspcore.model_info import EXTRA_OPENVINO, ModelInfo
from runtime.backends.openvino import IR_SUFFIX, PRECISION_HINT_KEY, RUNTIME_OPTIONS, import_openvino, read_model

PRECISE = "precise_0"  # ov::disable_fp16_compression's rt_info key, set from Python as an empty string
# How the mark reads back from an IR: 2026.x serializes it as DisablePrecisionConversion, older releases as precise
PRECISE_READ_BACK = ("DisablePrecisionConversion_0", PRECISE)
ROUNDED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # what the CPU plugin runs in bf16 (with Interpolate)
UNMARKED = ("Parameter", "Result", "Constant")  # no arithmetic: nothing to keep in f32


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 on this machine (AMX or AVX512-BF16)."""
    return "BF16" in import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


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
    for node in _nodes(source_model, kept_nodes(source_model, exclude)):
        for op in ops_of(model, node):
            op.get_rt_info()[PRECISE] = ""
    return model


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
