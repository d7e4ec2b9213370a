"""Layer-by-layer comparison of a converted model with its FP32 source (Polygraphy's `debug precision` idea,
on the CPU): both run in ONNX Runtime with the output of every compute node exposed, matched by node name
(both quantizers and AutoCast keep node names; tensor names are not stable). Used by the repair's ranking and
by `psp-export compare`."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np


COMPUTE = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclass(frozen=True)
class LayerError:
    """One compute node: relative L2 error and cosine similarity of its output against FP32, and `jump`, the
    error it adds (its error minus the largest error at its nearest upstream compute nodes)."""

    node: str
    op: str
    tensor: str
    rel_error: float
    cosine: float
    jump: float

    def to_dict(self) -> dict:
        return asdict(self)


def _load(model):
    import onnx

    return onnx.load(str(model)) if isinstance(model, (str, os.PathLike)) else model


def matched_nodes(reference, candidate) -> list[tuple[str, str, str, str]]:
    """(node name, op, reference tensor, candidate tensor) for compute nodes of both graphs, in the
    reference's order. The reference tensor is the candidate node's output name when the reference has it:
    ONNX Runtime's quantizer drops a Relu after a Conv (its U8 quantization clips at zero) and gives the Conv
    the Relu's output name, so post-ReLU is compared with post-ReLU. The candidate tensor is what its
    consumers read: past a QuantizeLinear -> DequantizeLinear pair on the node's output (ONNX Runtime's
    placement), which is where that clipping and the rounding happen."""
    produced = {o for n in reference.graph.node for o in n.output}
    readers: dict[str, list] = {}
    for node in candidate.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {n.name: n.output[0] for n in candidate.graph.node if n.op_type in COMPUTE}
    rows = []
    for node in reference.graph.node:
        tensor = outputs.get(node.name)
        if node.op_type in COMPUTE and tensor in produced:
            rows.append((node.name, node.op_type, tensor, _dequantized(tensor, readers)))
    return rows


def _dequantized(tensor: str, readers: dict[str, list]) -> str:
    """The DequantizeLinear output behind `tensor` when its only reader is a QuantizeLinear feeding one."""
    quant = readers.get(tensor, [])
    if len(quant) == 1 and quant[0].op_type == "QuantizeLinear":
        dequant = readers.get(quant[0].output[0], [])
        if len(dequant) == 1 and dequant[0].op_type == "DequantizeLinear":
            return dequant[0].output[0]
    return tensor


def upstream_compute(model) -> dict[str, set[str]]:
    """compute node -> the nearest compute nodes upstream of it (through Relu, Add, MaxPool, Concat, ...)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    memo: dict[str, set[str]] = {}

    def find(tensor: str) -> set[str]:
        node = producer.get(tensor)
        if node is None:
            return set()
        if node.op_type in COMPUTE:
            return {node.name}
        if tensor not in memo:
            memo[tensor] = set()  # guards against revisiting while resolving
            memo[tensor] = set().union(*(find(i) for i in node.input if i))
        return memo[tensor]

    return {n.name: set().union(*(find(i) for i in n.input if i)) for n in model.graph.node if n.op_type in COMPUTE}


def _exposed_session(model, threads: int | None):
    """An ONNX Runtime CPU session of an in-memory model. Not the Runner on purpose: the copies run here exist
    only in memory, with every compared node's output added as a graph output, and all of those outputs are
    read (a Runner runs a model file and returns its first output)."""
    from pspcore.onnx_session import SessionFromOnnx

    return SessionFromOnnx(model, threads=threads, quiet=True)()


def _exposed(model, tensors: list[str]):
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    have = {o.name for o in copy.graph.output}
    for name in tensors:
        if name not in have:
            copy.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return copy


def compare_layers(reference, candidate, batch: np.ndarray,
                   threads: int | None = None) -> list[LayerError]:
    """Per compute node in graph order, the candidate's output against the reference's on `batch`, image by
    image (sums accumulated, so the intermediate tensors of one image only are held at a time)."""
    ref_model, cand_model = _load(reference), _load(candidate)
    rows = matched_nodes(ref_model, cand_model)
    if not rows:
        return []
    ref_sess = _exposed_session(_exposed(ref_model, sorted({r[2] for r in rows})), threads)
    cand_sess = _exposed_session(_exposed(cand_model, sorted({r[3] for r in rows})), threads)
    sums = {r[0]: np.zeros(4) for r in rows}  # |a-b|^2, |a|^2, |b|^2, a.b
    for i in range(len(batch)):
        got = [dict(zip([o.name for o in s.get_outputs()], s.run(None, {s.get_inputs()[0].name: batch[i:i + 1]})))
               for s in (ref_sess, cand_sess)]
        for node, _, ref_tensor, cand_tensor in rows:
            a, b = got[0][ref_tensor].ravel().astype(np.float64), got[1][cand_tensor].ravel().astype(np.float64)
            sums[node] += [np.dot(a - b, a - b), np.dot(a, a), np.dot(b, b), np.dot(a, b)]
    upstream = upstream_compute(ref_model)
    errors: dict[str, float] = {}
    result = []
    for node, op, tensor, _ in rows:
        diff, aa, bb, ab = sums[node]
        rel = float(np.sqrt(diff) / (np.sqrt(aa) + 1e-12))
        cosine = float(ab / (np.sqrt(aa * bb) + 1e-12))
        errors[node] = rel
        before = max((errors.get(u, 0.0) for u in upstream.get(node, ())), default=0.0)
        result.append(LayerError(node, op, tensor, rel, cosine, rel - before))
    return result


def first_past(rows: list[LayerError], threshold: float) -> LayerError | None:
    """The first layer in graph order whose relative error exceeds `threshold`."""
    return next((r for r in rows if r.rel_error > threshold), None)
