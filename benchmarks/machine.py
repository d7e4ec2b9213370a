"""What a benchmark ran on: the CPU, cores, threads and how busy the machine was, recorded with every report;
and the machine's own limit, the INT8 and FP32 GEMM rates its runtimes reach, which a model's rate is set against."""
from __future__ import annotations

import importlib.util
import os
import platform
import time
from dataclasses import dataclass
from functools import partial

import numpy as np

from pspcore.threads import cpu_threads


def machine_info(threads: int | None) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "load_average": load_average()}


def load_average() -> float | None:
    """The 1-minute load average: above the core count, other processes were competing for the CPU."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def busy_warning(machine: dict) -> str | None:
    """A warning when the machine was busy during the run. Interleaving keeps a steady slowdown fair, but
    thread pools that spin at barriers (PyTorch's OpenMP) lose far more than others on an oversubscribed CPU."""
    loads = [v for v in (machine.get("load_average"), machine.get("load_average_end")) if v is not None]
    cores = machine.get("cores") or 0
    if not loads or not cores or max(loads) <= cores:
        return None
    return (f"machine busy: load average up to {max(loads):.1f} on {cores} cores; multi-threaded PyTorch suffers "
            "more than ONNX Runtime under contention, so speed-ups over it may be overstated")


# ------------------------------------------------------------------------------ the machine's GEMM limit

GEMM_N = 2048  # big enough that a GEMM runs at its kernel's steady rate, small enough for a few seconds


@dataclass(frozen=True)
class GemmRate:
    """One runtime's best rate on an n^3 GEMM (2*n^3 operations), in tera-operations per second."""

    runtime: str
    kind: str  # "int8", "fp32" or "bf16" (a CPU that runs bf16)
    op: str
    tops: float


def gemm_models(n: int = GEMM_N) -> dict[str, bytes]:
    """ONNX models of an n^3 GEMM: u8s8 MatMulInteger, the same as Q/DQ around a float MatMul (the form
    OpenVINO turns into its integer kernel), and a float32 MatMul. The weight is a constant, as in a network."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w8 = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "w8")
    w32 = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "w32")
    scale = numpy_helper.from_array(np.array(0.02, np.float32), "scale")
    u8_zero = numpy_helper.from_array(np.array(128, np.uint8), "u8_zero")
    s8_zero = numpy_helper.from_array(np.array(0, np.int8), "s8_zero")

    def model(nodes, in_type, out_type, inits) -> bytes:
        graph = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("a", in_type, [n, n])],
                                  [helper.make_tensor_value_info("y", out_type, [n, n])], initializer=inits)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        proto.ir_version = 8
        return proto.SerializeToString()

    qdq = [helper.make_node("QuantizeLinear", ["a", "scale", "u8_zero"], ["aq"]),
           helper.make_node("DequantizeLinear", ["aq", "scale", "u8_zero"], ["ad"]),
           helper.make_node("DequantizeLinear", ["w8", "scale", "s8_zero"], ["wd"]),
           helper.make_node("MatMul", ["ad", "wd"], ["y"])]
    return {
        "int8 MatMulInteger u8s8": model([helper.make_node("MatMulInteger", ["a", "w8"], ["y"])],
                                         TensorProto.UINT8, TensorProto.INT32, [w8]),
        "int8 Q/DQ MatMul": model(qdq, TensorProto.FLOAT, TensorProto.FLOAT, [w8, scale, u8_zero, s8_zero]),
        "fp32 MatMul": model([helper.make_node("MatMul", ["a", "w32"], ["y"])], TensorProto.FLOAT,
                             TensorProto.FLOAT, [w32]),
    }


def _best_seconds(run, seconds: float, least: int = 3) -> float:
    run()  # warm-up: first-call allocations and kernel selection
    best, start, done = float("inf"), time.perf_counter(), 0
    while done < least or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
        done += 1
    return best


def _onnxruntime_gemm(model: bytes, feed: np.ndarray, threads: int | None):
    from pspcore.onnx_session import SessionFromOnnx

    session = SessionFromOnnx(model, threads=threads)()
    return lambda: session.run(None, {"a": feed})


def _openvino_gemm(model: bytes, feed: np.ndarray, threads: int | None, hint: str = "f32"):
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": hint, **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
    compiled = core.compile_model(core.read_model(model), "CPU", config)
    request = compiled.create_infer_request()
    return lambda: request.infer({0: feed}, share_inputs=True, share_outputs=True)


def measure_gemm_limits(threads: int | None, n: int = GEMM_N, seconds: float = 0.5) -> list[GemmRate]:
    """The best INT8 and FP32 GEMM rates this machine's runtimes reach (ONNX Runtime; OpenVINO where
    installed), each the best of at least 3 runs over about `seconds`, and on a CPU that runs bf16 (AMX or
    AVX512-BF16) OpenVINO's bf16 rate (the FP32 MatMul with the bf16 hint). Runtimes or ops a build lacks are
    left out. A few seconds in all."""
    threads = cpu_threads(threads)  # the count the models' runners use (OMP_NUM_THREADS when none is given)
    rng = np.random.default_rng(1)
    feeds = {"uint8": rng.integers(0, 256, (n, n), dtype=np.uint8),
             "float32": rng.standard_normal((n, n), dtype=np.float32)}
    runtimes = {"onnxruntime": _onnxruntime_gemm}
    from runtime.backends import openvino as openvino_backend  # its package is imported only when called

    if importlib.util.find_spec("openvino") is not None:
        runtimes["openvino"] = _openvino_gemm
    runs = []  # (runtime, kind, op, the GEMM's run)
    models = gemm_models(n)
    for op, model in models.items():
        feed = feeds["uint8" if "Integer" in op else "float32"]
        for runtime, build in runtimes.items():
            if runtime == "openvino" and "Integer" in op:
                continue  # OpenVINO reads MatMulInteger as a float MatMul; its integer kernel is the Q/DQ form
            runs.append((runtime, op.split()[0], op.split(" ", 1)[1], partial(build, model, feed, threads)))
    if "openvino" in runtimes and openvino_backend.cpu_has_bf16():
        runs.append(("openvino", "bf16", "MatMul (bf16 hint)",
                     partial(_openvino_gemm, models["fp32 MatMul"], feeds["float32"], threads, hint="bf16")))
    rates = []
    for runtime, kind, op, build in runs:
        try:
            best = _best_seconds(build(), seconds)
        except Exception:  # an op this runtime build does not implement: no rate, not a failed benchmark
            continue
        rates.append(GemmRate(runtime, kind, op, 2.0 * n ** 3 / best / 1e12))
    return rates


def best_limits(rates: list[GemmRate]) -> dict[str, GemmRate]:
    """kind ('int8', 'fp32', 'bf16') -> the fastest rate measured for it."""
    best: dict[str, GemmRate] = {}
    for rate in rates:
        if rate.kind not in best or rate.tops > best[rate.kind].tops:
            best[rate.kind] = rate
    return best
