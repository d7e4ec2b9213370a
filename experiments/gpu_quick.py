"""The prepared GPU acceptance run, `python -m experiments.gpu_check --quick`: PyTorch only, a few minutes on one
H100/H200 (budget: under 6). Beside gpu_check's PyTorch part (every precision and the graph replay against FP32
computed on the CPU), it checks what only a GPU shows of the torch runner: TF32 semantics (TF32 really
changes an FP32 matmul and convolution there, strict FP32 does not, and the runner's FP32 stays strict when
TF32 is switched on around it), a CUDA graph captured on a second device (when there is one), that changing
between two shapes does not capture again and what a capture costs, and the torch GPU tests (tests/gpu).
Without a GPU it writes its report with one line saying so."""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from experiments.gpu_torch import ERROR, FAILED, PASSED, SKIPPED, TARGETS, TorchTarget, passes
from export.parity import compare_outputs

ROOT = Path(__file__).resolve().parent.parent
QUICK = {"size": (257, 257), "num_inputs": 4, "duration_s": 1.0, "matmul_n": 8192, "min_iters": 10,
         "tensorrt": False}
GPU_TESTS = ("tests/gpu",)
GPU_TESTS_TIMEOUT_S = 240


def quick_check(name: str, status: str, detail: str, **figures) -> dict:
    return {"check": name, "status": status, "detail": detail, **figures}


def guarded(name: str, check, *args) -> dict:
    """One check; an exception is its result (the others still run)."""
    try:
        return check(name, *args)
    except Exception as exc:
        return quick_check(name, ERROR, f"{type(exc).__name__}: {exc}")


def run_quick(config, log=print, target: TorchTarget | str | None = None, report: dict | None = None) -> dict:
    """gpu_check's PyTorch part (at `config`: quick_config for the acceptance run), then the GPU-only checks
    above, into `report`."""
    from experiments.gpu_check import run_gpu_check

    report = {} if report is None else report
    with tempfile.TemporaryDirectory(prefix="psp-gpu-quick-") as tmp:
        config = replace(config, workdir=config.workdir or Path(tmp))  # the model must outlive the first part
        run_gpu_check(config, log=log, target=target, report=report)
        if "no_gpu" in report or report["torch"].get("skipped") or report["torch"].get("error"):
            return report
        return _gpu_only_checks(config, report, log, target)


def quick_config(config):
    """The acceptance run's settings: a small model size (unless one is given), short latency runs, no TensorRT."""
    return replace(config, **{k: v for k, v in QUICK.items() if k != "size" or config.size is None})


def _gpu_only_checks(config, report: dict, log, target) -> dict:
    from experiments.gpu_check import verdict

    if target is None:
        from experiments.gpu_torch import cuda_target

        target = cuda_target(config.device)
    checkpoint = Path(report["model"]["checkpoint"])
    checks = [guarded("TF32 semantics", tf32_semantics, target),
              guarded("runner FP32 stays strict with TF32 switched on around it", runner_fp32_strict, target,
                      checkpoint),
              guarded("CUDA graphs captured on a second GPU replay new inputs", second_device_capture, target,
                      checkpoint),
              guarded("two alternating shapes are captured once each", recapture_cost, target, checkpoint),
              guarded("torch GPU tests (tests/gpu)", gpu_tests, target)]
    for check in checks:
        log(f"{check['status']:7s} {check['check']}: {check['detail']}")
    report["quick"] = checks
    statuses = [c["status"] for c in report["torch"]["checks"]] + [ERROR for _ in report["torch"]["errors"]]
    report["passed"] = verdict(statuses + [c["status"] for c in checks])
    return report


def _needs_cuda(target: TorchTarget) -> str | None:
    return None if target.device.startswith("cuda") else f"needs a CUDA device (the target is {target.device})"


def _inputs(checkpoint: Path, count: int, seed: int):
    from experiments.gpu_check import check_inputs
    from pspnet.checkpoint import load_model

    info = load_model(checkpoint)[1]
    return check_inputs(info, info.input_size or (129, 129), count, seed=seed)


def tf32_semantics(name: str, target: TorchTarget) -> dict:
    """An FP32 matmul and convolution against float64 on the CPU: with TF32 off (strict_fp32) the error is FP32's;
    with TF32 on, ten-bit mantissas make it clearly larger on a GPU with TF32 (compute capability 8.0+)."""
    import torch

    from pspnet.gpu import describe_tf32_off, strict_fp32, tf32_mode

    if why := _needs_cuda(target):
        return quick_check(name, SKIPPED, why)
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(2048, 2048, generator=generator) for _ in range(2))
    x, w = torch.randn(2, 64, 64, 64, generator=generator), torch.randn(64, 64, 3, 3, generator=generator)
    exact = {"matmul": (a.double() @ b.double()),
             "conv": torch.nn.functional.conv2d(x.double(), w.double(), padding=1)}

    def errors() -> dict[str, float]:
        dev = target.device
        got = {"matmul": (a.to(dev) @ b.to(dev)).cpu(),
               "conv": torch.nn.functional.conv2d(x.to(dev), w.to(dev), padding=1).cpu()}
        target.synchronize()
        return {k: float((got[k].double() - exact[k]).abs().max() / exact[k].abs().max()) for k in exact}

    with strict_fp32() as api:
        strict = errors()
    with tf32_mode(True):
        loose = errors()
    major, _ = torch.cuda.get_device_capability(torch.device(target.device))
    figures = {"api": api, "strict_rel_error": strict, "tf32_rel_error": loose}
    detail = (f"{describe_tf32_off(api)}; max error / max |value|: strict {strict}, TF32 {loose}")
    if max(strict.values()) > 1e-5:
        return quick_check(name, FAILED, "strict FP32 is not FP32: " + detail, **figures)
    if major < 8:
        return quick_check(name, SKIPPED, f"compute capability {major}.x has no TF32; " + detail, **figures)
    clearly_tf32 = all(loose[k] > 10 * strict[k] for k in strict)
    return quick_check(name, PASSED if clearly_tf32 else FAILED, detail, **figures)


def runner_fp32_strict(name: str, target: TorchTarget, checkpoint: Path) -> dict:
    """The torch runner's FP32 on the GPU with TF32 switched on globally around it: still within the FP32 gate
    against the CPU (it turns TF32 off itself); the model called directly under the same switch, for contrast."""
    import torch

    from experiments.gpu_torch import cpu_reference
    from pspnet.gpu import tf32_mode
    from pspnet.runner import TorchRunner

    if why := _needs_cuda(target):
        return quick_check(name, SKIPPED, why)
    batch = _inputs(checkpoint, 2, seed=3000)
    (expected,) = cpu_reference(checkpoint, batch)
    with tf32_mode(True), TorchRunner(checkpoint, device=target.device) as runner:
        got = runner.infer(batch)
        with torch.inference_mode():
            direct = runner.model(torch.from_numpy(batch).to(runner.device)).float().cpu().numpy()
    report, loose = compare_outputs(expected, got), compare_outputs(expected, direct)
    detail = f"runner: {report.describe()}; the model called directly under TF32: {loose.describe()}"
    return quick_check(name, PASSED if passes("fp32", report) else FAILED, detail,
                       runner_max_rel=report.max_rel_to_range, tf32_max_rel=loose.max_rel_to_range)


def second_device_capture(name: str, target: TorchTarget, checkpoint: Path) -> dict:
    """A runner with CUDA graphs on the target GPU captures first, then one on another GPU: the second one's
    replay on a new input must match FP32 on the CPU (pytorch issue 87894: it used to replay the capture's
    output)."""
    import torch

    from experiments.gpu_torch import cpu_reference
    from pspnet.runner import TorchRunner

    if why := _needs_cuda(target):
        return quick_check(name, SKIPPED, why)
    if torch.cuda.device_count() < 2:
        return quick_check(name, SKIPPED, f"one GPU visible ({torch.cuda.device_count()})")
    here = torch.device(target.device).index or 0
    other = 1 if here == 0 else 0
    first, fresh = _inputs(checkpoint, 2, seed=4000), _inputs(checkpoint, 2, seed=5000)
    (expected,) = cpu_reference(checkpoint, fresh)
    with TorchRunner(checkpoint, device=f"cuda:{here}", cuda_graphs=True) as a, \
            TorchRunner(checkpoint, device=f"cuda:{other}", cuda_graphs=True) as b:
        a.infer(first)
        b.infer(first)
        got = b.infer(fresh)
        mine = a.infer(fresh)
    report, own = compare_outputs(expected, got), compare_outputs(expected, mine)
    ok = passes("fp32", report) and passes("fp32", own)
    return quick_check(name, PASSED if ok else FAILED, f"cuda:{other} {report.describe()}; cuda:{here} "
                                                         f"{own.describe()}")


def recapture_cost(name: str, target: TorchTarget, checkpoint: Path, rounds: int = 5) -> dict:
    """FP16 channels_last with CUDA graphs, alternating between a full and a partial batch (psp-eval's last
    batch, psp-bench's batch list): each shape is captured once and replayed after, on inputs that change from
    one round to the next; every answer within the FP16 gate against the CPU. Reports the capture and the replay
    times."""
    from experiments.gpu_torch import cpu_reference
    from pspnet.runner import TorchRunner

    sets = [_inputs(checkpoint, 2, seed=6000), _inputs(checkpoint, 2, seed=7000)]
    answers = cpu_reference(checkpoint, *sets)
    runner = TorchRunner(checkpoint, device=target.device, precision="fp16", channels_last=True, cuda_graphs=True)
    if target.graph_type is not None:
        runner.graph_type = target.graph_type
    captures, replays, worst = [], [], None
    with runner:
        for i in range(rounds):
            full, expected = sets[i % 2], answers[i % 2]
            for batch, wanted in ((full, expected), (full[:1], expected[:1])):
                start = time.perf_counter()
                got = runner.infer(batch)
                (captures if i == 0 else replays).append(1e3 * (time.perf_counter() - start))
                report = compare_outputs(wanted, got)
                if worst is None or report.argmax_agreement < worst.argmax_agreement:
                    worst = report
        graphs = len(runner._graphs.graphs)
    ok = graphs == 2 and passes("fp16", worst)
    figures = {"graphs": graphs, "capture_ms": [round(t, 2) for t in captures],
               "replay_median_ms": round(statistics.median(replays), 3)}
    detail = (f"{graphs} graphs for 2 shapes over {rounds} rounds; first calls (capture) "
              f"{', '.join(f'{t:.0f}' for t in captures)} ms, replays {figures['replay_median_ms']} ms median; "
              f"worst {worst.describe()} (gate {100 * TARGETS['fp16'][1]:g}%)")
    return quick_check(name, PASSED if ok else FAILED, detail, **figures)


def gpu_tests(name: str, target: TorchTarget) -> dict:
    import importlib.util

    if why := _needs_cuda(target):
        return quick_check(name, SKIPPED, why)
    if importlib.util.find_spec("pytest") is None:  # a bare GPU image may lack it; carry its wheel to run them
        return quick_check(name, SKIPPED, "pytest is not installed here")
    command = [sys.executable, "-m", "pytest", *GPU_TESTS, "-q", "-p", "no:cacheprovider", "-o", "addopts=",
               "-rs", "--no-header"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=GPU_TESTS_TIMEOUT_S)
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    status = {0: PASSED, 5: SKIPPED}.get(done.returncode, FAILED)
    return quick_check(name, status, summary, output_tail=done.stdout[-3000:] + done.stderr[-1000:])
