"""The machine's limit beside each measurement: a model's achieved rate (its Conv + MatMul operations per
second) as a fraction of the best GEMM rate this machine's runtimes reach for its kind (INT8, FP32, or bf16 on a
CPU that runs it)."""
from __future__ import annotations

from benchmarks.loading import Loaded
from benchmarks.machine import GemmRate, best_limits
from benchmarks.records import Result


def limit_kind(precision: str, measured) -> str:
    """Which GEMM rate bounds a model: INT8 models the integer one, bf16 models the bf16 one where it was
    `measured` (a CPU that runs bf16), everything else (fp32, and fp16 or bf16 computed on a CPU without them,
    in f32) the FP32 one."""
    precision = precision.lower()
    if precision.startswith("int8"):
        return "int8"
    return "bf16" if precision.startswith("bf16") and "bf16" in measured else "fp32"


def add_limit_fractions(results: list[Result], gops: dict[str, float | None], limits: list[GemmRate]) -> None:
    """Each result's achieved rate (its model's operations / median latency) and, for a model computed on the
    CPU, its fraction of the best CPU GEMM rate of its kind. `gops`: model path -> GOP per image (see
    count_gops). The measured rates are the CPU's: a GPU row (TensorRT, torch on CUDA, ONNX Runtime's GPU
    providers) shows its rate without a fraction, never one of the CPU's limit."""
    best = best_limits(limits)
    for r in results:
        r.gop = gops.get(r.model)
        if r.gop is None or r.latency.median <= 0:
            continue
        r.tops = r.gop * r.batch / r.latency.median  # GOP per ms = TOP/s
        if r.processor != "cpu":
            continue
        r.limit_kind = limit_kind(r.precision, best)
        if r.limit_kind in best:
            r.limit_fraction = r.tops / best[r.limit_kind].tops


def best_of(first: list[GemmRate], second: list[GemmRate]) -> list[GemmRate]:
    """Per (runtime, kind, op), the faster of two measurements."""
    best: dict[tuple, GemmRate] = {}
    for rate in [*first, *second]:
        key = (rate.runtime, rate.kind, rate.op)
        if key not in best or rate.tops > best[key].tops:
            best[key] = rate
    return list(best.values())


def count_gops(loaded: list[Loaded], size: tuple[int, int]) -> dict[str, float | None]:
    """model path -> Conv + MatMul GOP per image. A model without a readable graph (a checkpoint) borrows
    the count of a loaded graph with the same architecture and class count: the same network."""
    from benchmarks.model_cost import model_gop

    gops = {item.candidate.model: model_gop(item.candidate.model, size) for item in loaded}
    for item in loaded:
        if gops[item.candidate.model] is None:
            key = (item.runner.info.arch, item.runner.info.num_classes)
            twin = next((gops[o.candidate.model] for o in loaded if gops[o.candidate.model] is not None
                         and (o.runner.info.arch, o.runner.info.num_classes) == key), None)
            gops[item.candidate.model] = twin
    return gops
