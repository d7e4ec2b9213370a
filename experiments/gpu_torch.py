"""The PyTorch half of experiments.gpu_check, for GPU machines with torch but no TensorRT: the torch runner on
the GPU in FP32 (TF32 off), FP16 and bf16 autocast, channels_last and CUDA graphs. Each variant's logits are
compared with PyTorch FP32 on the CPU (computed independently, on other hardware) under the export gates; a
CUDA graph captured on one input is replayed on a new one and compared with eager on that input; latency and
the achieved rate are reported against the GPU's own measured bf16 matmul rate. Tests run all of it on a
stand-in device (the CPU, with an eager stand-in for the graph)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from export.parity import FP32_MAX_REL, FP32_MIN_AGREEMENT, ParityReport, compare_outputs
from export.precision.verdict import FLOAT_GATE, INT8_GATE

# Parity gates per precision: (max error / logit range or None, min argmax agreement). FP16/INT8 have no error
# bound, so strict argmax agreement decides, at the gates of the verified conversion (export.precision.verdict). bf16
# has no export gate; its 8-bit mantissa sits between FP16 and INT8, so it is held to the INT8 gate.
TARGETS = {"fp32": (FP32_MAX_REL, FP32_MIN_AGREEMENT), "fp16": (None, FLOAT_GATE),
           "bf16": (None, INT8_GATE), "int8": (None, INT8_GATE)}
# A graph replay against eager at the same precision: the same kernels on the same input.
REPLAY_TARGET = (1e-3, 0.9999)
PASSED, FAILED, SKIPPED, ERROR = "passed", "failed", "skipped", "error"


def passes(precision: str, report: ParityReport) -> bool:
    max_rel, min_agreement = TARGETS[precision]
    return report.ok(max_rel=max_rel if max_rel is not None else float("inf"), min_agreement=min_agreement)


@dataclass(frozen=True)
class TorchVariant:
    name: str
    precision: str = "fp32"
    channels_last: bool = False
    cuda_graphs: bool = False

    def options(self) -> dict:
        return {"precision": self.precision, "channels_last": self.channels_last, "cuda_graphs": self.cuda_graphs}


VARIANTS = (TorchVariant("fp32"), TorchVariant("fp16", "fp16"), TorchVariant("bf16", "bf16"),
            TorchVariant("fp16 channels_last", "fp16", channels_last=True),
            TorchVariant("bf16 channels_last", "bf16", channels_last=True),
            TorchVariant("fp16 channels_last cuda graphs", "fp16", channels_last=True, cuda_graphs=True))


@dataclass
class TorchTarget:
    """Where the PyTorch measurements run: a CUDA device (cuda_target), or in tests a stand-in."""

    device: str  # torch device string, "cuda:0"
    name: str  # the GPU's name, for the report
    synchronize: Callable[[], None]
    graph_type: type | None = None  # None: the runner's own (torch.cuda.CUDAGraph)


def cuda_target(index: int) -> TorchTarget | str:
    """The CUDA device `index` as seen by torch, or why torch cannot use one."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        return f"torch {torch.__version__} ({build}) sees no CUDA device"
    if index >= torch.cuda.device_count():
        return f"torch sees {torch.cuda.device_count()} CUDA device(s), not device {index}"
    return TorchTarget(f"cuda:{index}", torch.cuda.get_device_name(index), lambda: torch.cuda.synchronize(index))


def gathered(errors: list[str], what: str, step: Callable[[], object]):
    """Run one step after the per-variant loop; an exception becomes an entry of `errors` (the report keeps
    everything gathered before it, and an error fails the verdict) instead of ending the check."""
    try:
        return step()
    except Exception as exc:
        errors.append(f"{what}: {type(exc).__name__}: {exc}")
        return None


def bf16_matmul_tflops(target: TorchTarget, n: int = 8192, repeats: int = 5) -> float:
    """This device's measured bf16 matmul rate (n x n x n, best of `repeats`), in TFLOP/s: the ceiling the
    model's achieved rate is read against."""
    import torch

    a, b = (torch.randn(n, n, device=target.device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(2):
        a @ b
    target.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        target.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e12


def model_flops(checkpoint: Path, size: tuple[int, int]) -> float:
    """Floating-point operations of one image's forward pass (multiply-adds counted twice), on the CPU."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pspnet.checkpoint import load_model

    model, _ = load_model(checkpoint)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, *size))
    return float(counter.get_total_flops())


@dataclass
class VariantCheck:
    variant: TorchVariant
    status: str  # passed / failed / error
    detail: str
    parity: dict | None = None  # ParityReport against the CPU FP32 reference, on the second input set
    replay: dict | None = None  # CUDA graph variants: the replay on a new input against eager on it
    latency_ms: dict | None = None
    images_per_s: float | None = None
    achieved_tflops: float | None = None
    fraction_of_bf16_matmul: float | None = None

    def line(self) -> str:
        speed = f", {self.latency_ms['median']:.2f} ms median" if self.latency_ms else ""
        return f"torch {self.variant.name:32s} {self.status:7s} {self.detail}{speed}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TorchCheck:
    device: str
    gpu_name: str
    reference: str
    checks: list[VariantCheck] = field(default_factory=list)
    tf32: str = ""  # how TF32 was turned off for FP32 (pspnet.gpu.describe_tf32_off)
    bf16_matmul_tflops: float | None = None
    flops_per_image: float | None = None
    latency: dict | None = None
    errors: list[str] = field(default_factory=list)  # steps after the variants that raised

    def to_dict(self) -> dict:
        return {**asdict(self), "checks": [c.to_dict() for c in self.checks]}


def cpu_reference(checkpoint: Path, *batches: np.ndarray) -> list[np.ndarray]:
    """PyTorch FP32 on the CPU: the expected output, computed on other hardware than anything it judges."""
    from pspnet.runner import TorchRunner

    with TorchRunner(checkpoint, device="cpu") as runner:
        return [runner.infer(b) for b in batches]


def make_runner(checkpoint: Path, target: TorchTarget, variant: TorchVariant):
    from pspnet.runner import TorchRunner

    runner = TorchRunner(checkpoint, device=target.device, **variant.options())
    if target.graph_type is not None:
        runner.graph_type = target.graph_type
    runner.activate()
    return runner


def check_variant(checkpoint: Path, target: TorchTarget, variant: TorchVariant, first: np.ndarray,
                  fresh: np.ndarray, expected: np.ndarray):
    """Run `first`, then `fresh` (for a CUDA graph: captured on `first`, replayed on `fresh`), and judge the
    output on `fresh` against `expected` (CPU FP32 on `fresh`); (check, active runner)."""
    runner = make_runner(checkpoint, target, variant)
    runner.infer(first)
    got = runner.infer(fresh)
    parity = compare_outputs(expected, got)
    ok = passes(variant.precision, parity)
    max_rel, gate = TARGETS[variant.precision]
    detail = f"{parity.describe()} vs CPU FP32 (gate {100 * gate:g}%)"
    replay = None
    if variant.cuda_graphs:
        eager = make_runner(checkpoint, target, TorchVariant("eager", variant.precision, variant.channels_last))
        try:
            report = compare_outputs(eager.infer(fresh), got)
        finally:
            eager.deactivate()
        replay_ok = report.ok(*REPLAY_TARGET)
        replay = {**asdict(report), "passed": replay_ok}
        detail += f"; graph replayed on a new input vs eager: {report.describe()}"
        ok = ok and replay_ok
    return VariantCheck(variant, PASSED if ok else FAILED, detail, asdict(parity), replay), runner


def run_torch_check(checkpoint: Path, target: TorchTarget, first: np.ndarray, fresh: np.ndarray, *,
                    batch: int, duration_s: float, matmul_n: int = 8192, variants=VARIANTS, min_iters: int = 10,
                    log=print) -> TorchCheck:
    """Every variant, each reported even when another fails or cannot run (its error is its result)."""
    from pspnet.gpu import describe_tf32_off, strict_fp32

    result = TorchCheck(target.device, target.name, "PyTorch FP32 on the CPU")
    (expected,) = cpu_reference(checkpoint, fresh)
    runners = {}
    try:
        # The runner's FP32 turns TF32 off itself; here it also covers the matmul rate and anything around it.
        with strict_fp32() as api:
            result.tf32 = describe_tf32_off(api)
            log(result.tf32)
            for variant in variants:
                try:
                    check, runner = check_variant(checkpoint, target, variant, first, fresh, expected)
                    runners[variant.name] = (check, runner)
                except Exception as exc:  # one variant failing must not hide the others
                    check = VariantCheck(variant, ERROR, f"{type(exc).__name__}: {exc}")
                result.checks.append(check)
                log(check.line())
            errors = result.errors
            result.bf16_matmul_tflops = gathered(errors, "bf16 matmul rate",
                                                 lambda: bf16_matmul_tflops(target, matmul_n))
            result.flops_per_image = gathered(errors, "model FLOPs",
                                              lambda: model_flops(checkpoint, tuple(first.shape[2:])))
            if runners:
                result.latency = gathered(errors, "latency", lambda: measure_latency(
                    {name: r for name, (_, r) in runners.items()}, first[:batch], duration_s, baseline="fp32",
                    min_iters=min_iters))
                if result.latency:
                    fill_rates(result, result.latency, batch)
    finally:
        for _, runner in runners.values():
            runner.deactivate()
    for error in result.errors:
        log(f"error   {error}")
    return result


def measure_latency(runners: dict, batch: np.ndarray, duration_s: float, baseline: str | None = None,
                    min_iters: int = 10) -> dict:
    """trtexec-style latency of every runner, measured interleaved (benchmarks.bench), as psp-bench's JSON;
    `baseline` names the runner speed-ups are against."""
    from benchmarks.bench import BenchConfig, BenchReport, add_speedups, measure_interleaved, summarize_series
    from benchmarks.loading import Candidate, Loaded
    from benchmarks.machine import machine_info
    from benchmarks.report import to_json

    config = BenchConfig(batches=(len(batch),), duration_s=duration_s, warmup_ms=min(200.0, 100 * duration_s),
                         min_iters=min_iters)
    series, schedule = measure_interleaved(runners, batch, config)
    results = []
    for label, runner in runners.items():
        loaded = Loaded(Candidate(runner.model_path, runner.name, baseline=label == baseline), runner, label, 0.0)
        results.append(summarize_series(loaded, series[label], len(batch), tuple(batch.shape[2:])))
    add_speedups(results)
    report = BenchReport(config=config, results=results, unavailable=[], machine=machine_info(None),
                         memory_note="", schedule={len(batch): schedule})
    return to_json(report)


def fill_rates(result: TorchCheck, bench: dict, batch: int) -> None:
    """Latency, images/s and the achieved rate of every measured variant, as a fraction of the matmul rate."""
    by_label = {r["label"]: r for r in bench["results"]}
    for check in result.checks:
        measured = by_label.get(check.variant.name)
        if measured is None:
            continue
        check.latency_ms = {k: measured["latency"][k] for k in ("median", "mean", "p90", "p99", "min", "max")}
        check.images_per_s = measured["images_per_s"]
        if result.flops_per_image:
            check.achieved_tflops = result.flops_per_image * check.images_per_s / 1e12
            if result.bf16_matmul_tflops:
                check.fraction_of_bf16_matmul = check.achieved_tflops / result.bf16_matmul_tflops
