"""Where ONNX Runtime spends its time: run each model with ORT's profiler on and total the kernel time per
operator type, so FP32 and INT8 (or two export options) can be compared op by op.

    python -m experiments.ort_profile model.onnx model.int8.onnx --runs 5 --threads 2
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from benchmarks.report import markdown_table, text_table, write_text
from pspcore.cli import SIZE, Command
from pspcore.errors import InputError
from pspcore.files import require_file
from pspcore.onnx_session import SessionFromOnnx, session_options


@dataclass(frozen=True)
class OpProfile:
    model: str
    runs: int
    per_run_ms: float  # all kernels of one run
    by_op: dict[str, float]  # op type -> ms per run
    nodes: dict[str, int]  # op type -> node count


def kernel_times(events: list[dict]) -> list[tuple[str, str, float]]:
    """(node name, op type, microseconds) of every kernel execution in an ORT profile."""
    out = []
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            out.append((e["name"][: -len("_kernel_time")], e.get("args", {}).get("op_name", "?"), float(e["dur"])))
    return out


def summarize(model: str, runs: int, kernels: list[tuple[str, str, float]]) -> OpProfile:
    by_op, nodes = defaultdict(float), defaultdict(set)
    for name, op, us in kernels:
        by_op[op] += us / 1e3 / runs
        nodes[op].add(name)
    total = sum(by_op.values())
    return OpProfile(model, runs, total, dict(sorted(by_op.items(), key=lambda kv: -kv[1])),
                     {op: len(n) for op, n in nodes.items()})


def profile_model(path: str | os.PathLike, runs: int, threads: int | None, size: tuple[int, int] | None) -> OpProfile:
    """Warm up once, then profile `runs` inferences of batch 1."""

    path = require_file(path, "model")
    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = SessionFromOnnx(path, options=options)()
        shape = session.get_inputs()[0].shape
        h, w = (d if isinstance(d, int) and d > 0 else None for d in shape[2:4])
        if not (h and w):
            if size is None:
                raise InputError(f"{path} has a dynamic input size: give --size HxW")
            h, w = size
        feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, 3, h, w), np.float32)}
        session.run(None, feed)  # warm-up: first-run allocations are not the steady state
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    kernels = kernel_times(events)
    warm = len(kernels) // (runs + 1)  # every run executes the same kernels; drop the warm-up's
    return summarize(path.name, runs, kernels[warm:])


def op_table(profiles: list[OpProfile], top: int) -> tuple[list[str], list[list[str]]]:
    ops = sorted({op for p in profiles for op in p.by_op}, key=lambda op: -max(p.by_op.get(op, 0) for p in profiles))
    headers = ["op type"] + [f"{p.model} ms" for p in profiles] + [f"{p.model} %" for p in profiles]
    rows = []
    for op in ops[:top]:
        rows.append([op] + [f"{p.by_op.get(op, 0):.2f}" for p in profiles]
                    + [f"{100 * p.by_op.get(op, 0) / max(p.per_run_ms, 1e-9):.1f}" for p in profiles])
    rows.append(["all kernels"] + [f"{p.per_run_ms:.2f}" for p in profiles] + ["100.0" for _ in profiles])
    return headers, rows


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--runs", type=click.IntRange(min=1), default=5, show_default=True, help="Profiled inferences.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Intra-op threads.")
@click.option("--size", type=SIZE, default=None, help="Input HxW for dynamic-shape models.")
@click.option("--top", type=click.IntRange(min=1), default=12, show_default=True, help="Op types to list.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Also write the Markdown table.")
def main(models, runs, threads, size, top, markdown_path):
    """Kernel time per ONNX operator type (batch 1, ONNX Runtime CPU), models side by side."""
    profiles = [profile_model(m, runs, threads, size) for m in models]
    table = op_table(profiles, top)
    click.echo("\n".join(text_table(*table)))
    if markdown_path:
        write_text("\n".join(markdown_table(*table)) + "\n", markdown_path)


if __name__ == "__main__":
    main()
