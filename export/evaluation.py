"""Running ONNX models for export's checks through the Runner psp-infer uses (the runtime's onnxruntime
backend, one session loader for both): logits on a batch, mIoU over a labelled list, latency."""
from __future__ import annotations

import math
import os
import statistics
import time

import numpy as np

from pspcore.model_info import ModelInfo
from pspcore.runner import Runner

LATENCY_RUNS = 5  # timed calls at least (a big model's calls take seconds)
LATENCY_SECONDS = 0.5  # and timed for at least this long (a small model's calls take milliseconds)
LATENCY_WARMUP_S = 0.2


def open_runner(path: str | os.PathLike, threads: int | None = None, backend: str = "onnxruntime") -> Runner:
    """The Runner of a model file on the CPU, for `with runner:`: ONNX Runtime, or the backend an INT8 target
    is judged on (openvino, FP32 parts in f32). The CPU on purpose: verdicts must not depend on which GPU
    provider a machine has (the TensorRT provider would build an engine for every candidate). Threads follow
    the one rule of every runtime (pspcore.threads: `threads`, else OMP_NUM_THREADS, else a thread per core)."""
    from pspcore.registry import create_runner

    if backend == "onnxruntime":
        return create_runner(backend, path, providers="cpu", threads=threads)
    return create_runner(backend, path, threads=threads)


def logits(runner: Runner, batch: np.ndarray) -> np.ndarray:
    """The runner's output for `batch`, one image at a time (bounds memory on large models)."""
    return np.concatenate([runner.infer(batch[i:i + 1]) for i in range(len(batch))])


def evaluate_miou(runner: Runner, eval_list: str | os.PathLike, info: ModelInfo, size: tuple[int, int],
                  limit: int | None = None) -> float:
    """mIoU over a labelled list (pspnet.evaluate, sliding windows of `size`: the protocol psp-bench
    accuracy uses)."""
    from pspnet.data.listfile import ListFileSource
    from pspnet.evaluate import EvalMode, evaluate

    result = evaluate(lambda x: runner.infer(x.astype(np.float32)), ListFileSource(eval_list), info.num_classes,
                      mode=EvalMode("slide", crop=tuple(size)), class_names=info.class_names, mean=info.mean,
                      std=info.std, limit=limit, progress=False)
    miou = float(result.miou)
    return 0.0 if math.isnan(miou) else miou


def latency_ms(runner: Runner, image: np.ndarray, runs: int = LATENCY_RUNS,
               seconds: float = LATENCY_SECONDS) -> float:
    """Median wall time of the calls on `image` (batch 1): at least `runs` and `seconds`, after warm-up calls
    for LATENCY_WARMUP_S (at least one). Five calls of a 10 ms model right after loading were noise: the demo's
    INT8 once measured slower than FP32 here while psp-bench had it 1.6x faster."""
    start = time.perf_counter()
    runner.infer(image)
    while time.perf_counter() - start < LATENCY_WARMUP_S:
        runner.infer(image)
    times, start = [], time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < seconds:
        began = time.perf_counter()
        runner.infer(image)
        times.append(1000 * (time.perf_counter() - began))
    return statistics.median(times)
