"""Walks over a written INT8 graph that the placement tests make themselves (never with the rules under test,
export.precision.graph): the output region, and the scales of each quantized conv weight."""
from __future__ import annotations

import numpy as np

COMPUTE = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
QDQ = {"QuantizeLinear", "DequantizeLinear"}


def output_region_of(model) -> list:
    """The nodes from the graph outputs back to the last compute op (excluded), walked here on the written graph
    itself (not with export.precision.graph.output_region, the rule under test): the data path only, so a
    Resize's sizes computed from a shape are not followed."""
    producer = {out: node for node in model.graph.node for out in node.output}
    region, todo, seen = [], [o.name for o in model.graph.output], set()
    while todo:
        node = producer.get(todo.pop())
        if node is None or id(node) in seen or node.op_type in COMPUTE or node.op_type == "Shape":
            continue
        seen.add(id(node))
        region.append(node)
        todo += list(node.input[:1]) if node.op_type == "Resize" else [i for i in node.input if i]
    return region


def constant(model, name: str) -> np.ndarray | None:
    import onnx

    for init in model.graph.initializer:
        if init.name == name:
            return onnx.numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return onnx.numpy_helper.to_array(node.attribute[0].t)
    return None


def weight_scales(model) -> list[tuple[str, np.ndarray, int, int]]:
    """(conv, scale, axis, out_channels) of every Conv whose weight is dequantized from stored values: the DQ's
    input is an initializer (INT8 weights) or the QuantizeLinear of one (FP32 weights quantized in the graph)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    found = []
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        dq = producer.get(conv.input[1])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        source = producer.get(dq.input[0])
        stored = constant(model, source.input[0] if source is not None and source.op_type == "QuantizeLinear"
                           else dq.input[0])
        assert stored is not None, f"{conv.name}: its weight is not stored in the graph"
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        found.append((conv.name, constant(model, dq.input[1]), axis, stored.shape[0]))
    return found


def assert_int8_placement(model, quantized_share: float = 0.5) -> None:
    """The output region (logits Resize, ArgMax if any) stays float, no Q/DQ in it or feeding it; every quantized
    conv weight keeps one scale per output channel (axis 0); at least `quantized_share` of the convs quantized."""
    region = output_region_of(model)
    assert "Resize" in {n.op_type for n in region}, [n.op_type for n in region]
    quantized = [n.name for n in region if n.op_type in QDQ]
    assert not quantized, f"Q/DQ in the output region: {quantized}"
    scales = weight_scales(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(scales) >= quantized_share * len(convs), f"{len(scales)} of {len(convs)} conv weights quantized"
    for conv, scale, axis, out_channels in scales:
        assert scale is not None and scale.ndim == 1 and scale.shape == (out_channels,) and axis == 0, \
            (conv, None if scale is None else scale.shape, axis, out_channels)
