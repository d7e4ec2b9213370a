"""Serving overhead of the real Triton server (psp-serve's, CPU) against local ONNX Runtime, for docs/triton.md:
one PSPNet-18 ONNX (random weights, 65x65, 5 classes) run locally and served as the plain model (python
platform) and as the image -> labels ensemble, over HTTP and gRPC, with and without system shared memory,
one client (psp-bench's interleaved latency) and 8 concurrent clients (threads, throughput).

    python -m experiments.triton_overhead [--duration-s 3] [-o DIR]

Prints a Markdown table; ratios are served / local (latency: > 1 is slower; throughput: < 1 is slower)."""
from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import click

from benchmarks.report import markdown_table, write_text
from pspcore.cli import Command, output_option


def make_model(folder: Path) -> Path:
    """pspnet18 at 65x65, 5 classes, randomised BN (outputs vary), exported and verified like psp-export."""
    import torch

    from experiments.export_report import randomize_batchnorm
    from export.onnx.exporter import export_onnx
    from pspnet import create_model
    from pspnet.checkpoint import info_for_config

    torch.manual_seed(0)
    model = randomize_batchnorm(create_model("pspnet18", num_classes=5)).eval()
    path = folder / "pspnet18_65.onnx"
    export_onnx(model, info_for_config(model.config), path, size=(65, 65))
    return path


def latency_rows(targets: dict[str, str], shm: bool, duration_s: float) -> dict[str, float]:
    """Median batch-1 latency (ms) per target, measured interleaved by psp-bench's loop."""
    from benchmarks.bench import BenchConfig, Candidate, run_benchmark

    config = BenchConfig(batches=(1,), warmup_ms=300, duration_s=duration_s, min_iters=20,
                         backend_options=(("shm", shm),))
    report = run_benchmark([Candidate(model) for model in targets.values()], config)
    by_model = {r.model: r.latency.median for r in report.results}
    return {name: by_model[model] for name, model in targets.items() if model in by_model}


def throughput(model: str, clients: int, duration_s: float, shm: bool = False) -> float:
    """Images per second with `clients` threads, each with its own runner, sending batch-1 requests."""
    from benchmarks.loading import make_input, runner_input
    from pspcore.registry import create_runner

    options = {"shm": True} if shm else {}
    done = [0] * clients
    start, stop = threading.Barrier(clients + 1), threading.Event()

    def client(i: int) -> None:
        # Each thread makes its own runner: tritonclient's HTTP client cannot change threads (gevent).
        with create_runner("auto", model, **options) as runner:
            batch = runner_input(runner, make_input(1, (65, 65), i))
            runner.infer(batch)
            start.wait()
            while not stop.is_set():
                runner.infer(batch)
                done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(duration_s)
    stop.set()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return sum(done) / seconds


@click.command(cls=Command)
@click.option("--duration-s", type=float, default=3.0, show_default=True)
@output_option("Folder for the model and repository [default: a temporary folder].", file_okay=False, path_type=Path)
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Also write the table here.")
def main(duration_s: float, output: Path | None, markdown_path: str | None) -> None:
    from export.triton.repository import export_triton
    from runtime.serve import TritonServer, free_port

    work = Path(output or tempfile.mkdtemp(prefix="triton-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    model = make_model(work)
    repo = work / "repo"
    export_triton(model, repo, name="pspnet", ensemble=True, platform="python", force=True)
    export_triton(model, repo, name="plain", platform="python", force=True)
    rows: list[tuple[str, str, float, float]] = []
    with TritonServer(repo, free_port(), free_port()) as server:
        targets = {"local onnxruntime": str(model)}
        for protocol, url in (("HTTP", f"http://{server.http_url}"), ("gRPC", f"grpc://{server.grpc_url}")):
            targets[f"plain model, {protocol}"] = f"{url}/plain"
            targets[f"ensemble, {protocol}"] = f"{url}/pspnet"
        for shm in (False, True):
            medians = latency_rows(targets, shm, duration_s)
            local = medians["local onnxruntime"]
            for name, ms in medians.items():
                if shm and name.startswith("local"):
                    continue
                rows.append((f"{name}{', shm' if shm else ''}", "1 client, median ms", ms, ms / local))
        local_ips = throughput(str(model), 8, duration_s)
        rows.append(("local onnxruntime", "8 clients, images/s", local_ips, 1.0))
        for name in ("plain model, gRPC", "ensemble, gRPC", "ensemble, HTTP"):
            ips = throughput(targets[name], 8, duration_s)
            rows.append((name, "8 clients, images/s", ips, ips / local_ips))
        ips = throughput(targets["ensemble, gRPC"], 8, duration_s, shm=True)
        rows.append(("ensemble, gRPC, shm", "8 clients, images/s", ips, ips / local_ips))
    table = "\n".join(markdown_table(["path", "measure", "value", "served / local"],
                                     [[name, measure, f"{value:.1f}", f"{ratio:.2f}"]
                                      for name, measure, value, ratio in rows], text_columns=2))
    click.echo(table)
    if markdown_path:
        write_text(table + "\n", markdown_path)


if __name__ == "__main__":
    main()
