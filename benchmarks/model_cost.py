"""What one image costs a model: the operations (2 x multiply-adds) of its Conv and MatMul nodes at an input
size, read off the graph with shapes (ONNX shape inference; OpenVINO's own shapes for an IR). Everything else
(Resize, pooling, ReLU) is memory-bound and left out, as in the usual GFLOPs figures (PSPNet-50 473x473: 324)."""
from __future__ import annotations

import math
from pathlib import Path

from pspcore.files import by_suffix
from runtime.backends.openvino import IR_SUFFIX


def model_gop(path: str | Path, size: tuple[int, int]) -> float | None:
    """Giga-operations of Conv + MatMul for one image of `size`, or None when the file is not a graph we can
    read (a checkpoint, an engine, a server URL) or its packages are missing."""
    count = by_suffix(path, {".onnx": onnx_gop, IR_SUFFIX: openvino_gop})
    try:
        return count(path, size) if count else None
    except ImportError:
        return None


def onnx_gop(path: str | Path, size: tuple[int, int]) -> float:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, 3, *size)):
        dim.Clear()
        dim.dim_value = value
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]}
    shapes.update({i.name: list(i.dims) for i in model.graph.initializer})
    ops = 0.0
    for node in model.graph.node:
        out = shapes.get(node.output[0])
        inputs = [shapes.get(name) for name in node.input[:2]]
        if not out or not all(out) or None in inputs:
            continue
        if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            weight = inputs[1] if node.op_type != "QLinearConv" else shapes.get(node.input[3])
            # out channels x (in/group x kh x kw) per output pixel = prod(weight) per pixel
            ops += 2.0 * math.prod(weight) * math.prod(out[2:]) if weight else 0.0
        elif node.op_type in ("MatMul", "MatMulInteger", "Gemm"):
            ops += 2.0 * math.prod(out) * inputs[0][-1]
    return ops / 1e9


def openvino_gop(path: str | Path, size: tuple[int, int]) -> float:
    import openvino as ov

    model = ov.Core().read_model(str(path))
    model.reshape({model.input(0): ov.PartialShape([1, 3, *size])})
    ops = 0.0
    for node in model.get_ordered_ops():
        kind = node.get_type_name()
        if kind not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        out = list(node.get_output_shape(0))
        weight = list(node.get_input_shape(1))
        if kind == "MatMul":
            transposed = node.get_attributes().get("transpose_a", False)
            a = list(node.get_input_shape(0))
            ops += 2.0 * math.prod(out) * (a[-2] if transposed else a[-1])
        else:
            ops += 2.0 * math.prod(weight) * math.prod(out[2:])
    return ops / 1e9
