"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization") on an FP32 ONNX model: per-channel
weight ranges of Conv -> Relu -> Conv pairs made equal, which leaves the FP32 function unchanged (ReLU is
positively homogeneous) but removes the outlier channels that per-tensor INT8 activations cannot represent."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SWEEPS = 4  # scales converge within a few passes over the chain of pairs


@dataclass(frozen=True)
class Equalization:
    path: Path
    pairs: int
    largest_log10_scale: float  # how far the ranges were apart (3 = a 1000x outlier)


def _consumers(graph) -> dict[str, list]:
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _grouped(node) -> bool:
    return any(a.name == "group" and a.i != 1 for a in node.attribute)


def equalizable_pairs(model) -> list[tuple]:
    """(conv1, conv2) with conv1 -> Relu -> conv2, each intermediate read by exactly that one node and not a
    graph output, both ungrouped with initializer weights read by no other node: the pairs a rescale of
    conv1's output channels cannot leak out of."""
    graph = model.graph
    weights = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    readers = _consumers(graph)
    pairs = []
    for conv1 in graph.node:
        if conv1.op_type != "Conv" or conv1.input[1] not in weights or _grouped(conv1):
            continue
        relu = readers.get(conv1.output[0], [])
        if len(relu) != 1 or relu[0].op_type != "Relu" or conv1.output[0] in outputs:
            continue
        conv2 = readers.get(relu[0].output[0], [])
        if (len(conv2) != 1 or conv2[0].op_type != "Conv" or conv2[0].input[0] != relu[0].output[0]
                or relu[0].output[0] in outputs or conv2[0].input[1] not in weights or _grouped(conv2[0])):
            continue
        shared = [name for name in (*conv1.input[1:], conv2[0].input[1]) if name and len(readers[name]) > 1]
        if not shared:
            pairs.append((conv1, conv2[0]))
    return pairs


def equalize(src: str | os.PathLike, dst: str | os.PathLike, sweeps: int = SWEEPS, eps: float = 1e-8) -> Equalization:
    """Write the equalized copy of `src` to `dst`: for each pair, channel i of conv1 (weights and bias)
    divided by s_i and conv2's input channel i multiplied by s_i, s_i = sqrt(r1_i / r2_i) with r the
    per-channel max |w|."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    init = {i.name: i for i in model.graph.initializer}
    pairs = equalizable_pairs(model)
    arrays = {name: numpy_helper.to_array(init[name]).astype(np.float32)
              for c1, c2 in pairs for name in (*c1.input[1:], c2.input[1]) if name}
    largest = 0.0
    for _ in range(sweeps):
        for conv1, conv2 in pairs:
            w1, w2 = arrays[conv1.input[1]], arrays[conv2.input[1]]
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(1)
            r2 = np.abs(np.swapaxes(w2, 0, 1)).reshape(w2.shape[1], -1).max(1)
            scale = np.where((r1 > eps) & (r2 > eps), np.sqrt(r1 / np.maximum(r2, eps)), 1.0).astype(np.float32)
            largest = max(largest, float(np.abs(np.log10(scale)).max()))
            arrays[conv1.input[1]] = w1 / scale.reshape(-1, *([1] * (w1.ndim - 1)))
            if len(conv1.input) > 2 and conv1.input[2]:
                arrays[conv1.input[2]] = arrays[conv1.input[2]] / scale
            arrays[conv2.input[1]] = w2 * scale.reshape(1, -1, *([1] * (w2.ndim - 2)))
    for name, array in arrays.items():
        dtype = numpy_helper.to_array(init[name]).dtype
        init[name].CopyFrom(numpy_helper.from_array(array.astype(dtype), name))
    onnx.save(model, str(dst))
    return Equalization(Path(dst), len(pairs), largest)
