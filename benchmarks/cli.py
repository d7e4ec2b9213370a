"""psp-bench: `psp-bench MODEL...` measures latency and throughput (the default command, `latency`);
`psp-bench accuracy --data LIST MODEL...` measures mIoU on the same images for every backend/precision."""
from __future__ import annotations

from pathlib import Path

import click

from benchmarks.bench import run_benchmark
from benchmarks.loading import backend_name
from benchmarks.records import BenchConfig, BenchReport, Candidate, Series
from pspcore.cli import (Command, Group, backend_flag_options, backend_option, batch_option, dataset_options,
                         device_option, echo_summary, json_destination, json_option, max_images_option, size_option)
from pspcore.errors import InputError, PSPError
from pspnet.data import dataset_names


class DefaultGroup(Group):
    """A group whose first argument may be a model instead of a command: anything that is not a command
    name (or --help) goes to `default_command`, so `psp-bench a.onnx b.pth` means `psp-bench latency ...`."""

    default_command = "latency"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup)
def main():
    """Benchmark PSPNet models on every backend and precision, side by side.

    \b
      psp-bench model.onnx model-int8.onnx --baseline model.pth --plot bench.png
      psp-bench accuracy --data val.txt model.onnx model-int8.onnx --baseline model.pth
      psp-bench accuracy --dataset cityscapes --data-root cityscapes/ model.onnx --baseline model.pth
      psp-bench e2e model.onnx --source street.mp4 --backend onnxruntime,openvino

    MODEL: .onnx (ONNX Runtime), .engine (TensorRT) or a .pth checkpoint (PyTorch eager FP32, the
    baseline). Run `psp-bench latency --help` for every option."""


def build_candidates(models: tuple[str, ...], backends: tuple[str, ...], baseline: str | None) -> list[Candidate]:
    """Every MODEL on every --backend ('auto' picks by file type), plus --baseline on torch.
    Without --baseline, the first checkpoint run on torch is the baseline."""
    names = list(dict.fromkeys(backends)) or ["auto"]
    candidates = [Candidate(str(baseline), "torch", baseline=True)] if baseline else []
    for model in models:
        for name in names:
            if baseline and Path(model) == Path(baseline) and name in ("auto", "torch"):
                continue  # already there as the baseline
            candidates.append(Candidate(model, name))
    if not baseline:
        from pspcore.registry import resolve_backend

        for i, c in enumerate(candidates):
            if resolve_backend(c.backend, c.model)[0] == "torch":
                candidates[i] = Candidate(c.model, c.backend, baseline=True)
                break
    if not candidates:
        raise InputError("give at least one MODEL (or --baseline CHECKPOINT)")
    return candidates


def refuse_unhonoured_options(candidates: list[Candidate], device: str, threads: int | None,
                              backend_options: dict) -> tuple[tuple[str, object], ...]:
    """Every runner must honour --device and --threads: refuse the run (one line, exit 2) before anything
    is measured, the way psp-infer and psp-eval refuse them. A backend's own option (--shm, --precision,
    --cuda-graphs) goes to the runners that take it (not the baseline); one that reaches none is refused too.
    Returns the backend options given, for the config."""
    from pspcore.cli import runner_options
    from pspcore.options import flag_of
    from pspcore.registry import command_line_options, takes_option

    for c in candidates:
        runner_options(c.backend, c.model, device=device, threads=threads)
    given = {k: v for k, v in backend_options.items() if v is not None and v is not False}
    measured = {backend_name(c) for c in candidates if not c.baseline}
    for option in given:
        if not any(takes_option(name, option) for name in measured):
            takers = ", ".join(b for b, _ in command_line_options().get(option, ()))
            raise InputError(f"{flag_of(option)} reaches no MODEL: no backend measured here takes it (it is for "
                             f"{takers or 'no backend'}; the baseline stays eager FP32)")
    return tuple(given.items())


class _Progress:
    """A tqdm bar per batch size counting seconds of samples collected (capped at --duration-s each)."""

    def __init__(self, config: BenchConfig):
        self.config = config
        self.bars: dict[int, object] = {}

    def __call__(self, batch: int, series: dict[str, Series]) -> None:
        from tqdm import tqdm

        goal = self.config.duration_s
        if batch not in self.bars:
            self.close()  # the previous batch is finished
            self.bars[batch] = tqdm(total=round(goal * len(series), 1), unit="s", desc=f"batch {batch}",
                                    leave=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} s")
        bar = self.bars[batch]
        bar.n = round(sum(min(s.busy_s, goal) for s in series.values()), 1)
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def check_outputs(*paths) -> None:
    """Report files must be writable before minutes of measuring, not after; --plot needs matplotlib."""
    from pspcore.files import check_writable

    for path in paths:
        if path and path != "-":
            check_writable(path)


def write_outputs(report: BenchReport, json_path, markdown_path, plot_path) -> None:
    from benchmarks.report import write_json, write_markdown

    if json_path:
        with json_destination(json_path) as path:
            written = write_json(report, path)
        if json_path != "-":
            click.echo(f"wrote {written}", err=True)
    if markdown_path:
        click.echo(f"wrote {write_markdown(report, markdown_path)}", err=True)
    if plot_path:
        from benchmarks.plot import write_plot

        click.echo(f"wrote {write_plot(report, plot_path)}", err=True)


@main.command("latency", cls=Command)
@click.argument("models", nargs=-1, metavar="MODEL...")
@backend_option("Backend(s) for every MODEL, comma-separated (auto: by file type).", several=True)
@device_option()
@batch_option("Batch sizes, e.g. 1,4.", several=True, dest="batches")
@size_option("Input HxW for all models [default: the baseline's input size, else the first model's].")
@click.option("--warmup-ms", type=click.FloatRange(min=0), default=200, show_default=True)
@click.option("--duration-s", type=click.FloatRange(min=0), default=3, show_default=True,
              help="Minimum seconds of samples per runner and batch.")
@click.option("--min-iters", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--slice-ms", type=click.FloatRange(min=0), default=200, show_default=True,
              help="Length of one runner's turn in the round robin (at least one iteration).")
@click.option("--baseline", type=click.Path(), default=None,
              help="Checkpoint run on PyTorch eager FP32; speed-ups are against it.")
@backend_flag_options()
@click.option("--limit/--no-limit", "limits", default=True, show_default=True,
              help="Measure the machine's INT8/FP32 GEMM rates (a few seconds) and show each model's rate as a "
                   "fraction of them.")
@json_option("Write every number to this JSON")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Write a Markdown report.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Write a PNG: latency distribution per runner and throughput vs batch.")
def latency_command(models, backend, device, batches, size, warmup_ms, duration_s, min_iters, slice_ms, baseline,
                    limits, json_path, markdown_path, plot_path, threads, **backend_flags):
    """Latency and throughput of every MODEL, measured interleaved in one run (trtexec statistics)."""
    from benchmarks.report import format_terminal

    check_outputs(json_path, markdown_path, plot_path)
    if plot_path:
        from benchmarks.plot import _pyplot

        _pyplot()  # an InputError now, not after the measurement, when matplotlib is missing
    candidates = build_candidates(models, backend, baseline)
    given = refuse_unhonoured_options(candidates, device, threads, backend_flags)
    config = BenchConfig(batches=tuple(dict.fromkeys(batches)), size=size, warmup_ms=warmup_ms,
                         duration_s=duration_s, min_iters=min_iters, slice_ms=slice_ms, threads=threads,
                         device=device, backend_options=given, limits=limits)
    progress = _Progress(config)
    try:
        report = run_benchmark(candidates, config, log=lambda line: click.echo(line, err=True),
                               on_slice=progress)
    finally:
        progress.close()
    if not report.results:
        raise PSPError("nothing could be measured: " + "; ".join(u.line() for u in report.unavailable))
    echo_summary(format_terminal(report), json_path)
    write_outputs(report, json_path, markdown_path, plot_path)


@main.command("accuracy", cls=Command)
@click.argument("models", nargs=-1, metavar="MODEL...")
@click.option("--data", "data_list", type=click.Path(),
              help="List file of `image label` pairs (e.g. from context-scenes export_split).")
@dataset_options(dataset_names, files=False,
                 dataset_help="Instead of --data: a dataset as downloaded, in the folder --data-root.",
                 data_root_help="--dataset: its folder; --data: the root the list's paths are relative to "
                                "[default: its folder].",
                 split_help="Split of --dataset.")
@click.option("--baseline", type=click.Path(), default=None,
              help="Checkpoint evaluated on PyTorch FP32: the reference for the mIoU drop.")
@backend_option("Backend(s) for every MODEL, comma-separated (auto: by file type).", several=True)
@device_option()
@size_option("Network input HxW [default: the model's].")
@backend_flag_options()
@max_images_option()
@click.option("--bench", "bench_json", type=click.Path(dir_okay=False), default=None,
              help="A psp-bench --json report whose speed joins the accuracy table.")
@json_option("Write the results to this JSON")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Write a Markdown table.")
def accuracy_command(models, data_list, dataset, data_root, split, baseline, backend, device, size, max_images,
                     bench_json, json_path, markdown_path, threads, **backend_flags):
    """mIoU of every MODEL on the same validation images, and its drop against PyTorch FP32."""
    check_outputs(json_path, markdown_path)
    from benchmarks.accuracy import (AccuracyConfig, format_accuracy, run_accuracy, write_accuracy_json,
                                     write_accuracy_markdown)

    candidates = build_candidates(models, backend, baseline)
    given = refuse_unhonoured_options(candidates, device, threads, backend_flags)
    config = AccuracyConfig(data_list=data_list, root=data_root, size=size, limit=max_images, threads=threads,
                            dataset=dataset, split=split, device=device, backend_options=given)
    report = run_accuracy(candidates, config, log=lambda line: click.echo(line, err=True))
    if not report.rows:
        raise PSPError("nothing could be evaluated: " + "; ".join(u.line() for u in report.unavailable))
    if bench_json:
        report.join_speed(bench_json)
    echo_summary(format_accuracy(report), json_path)
    if json_path:
        with json_destination(json_path) as path:
            written = write_accuracy_json(report, path)
        if json_path != "-":
            click.echo(f"wrote {written}", err=True)
    if markdown_path:
        click.echo(f"wrote {write_accuracy_markdown(report, markdown_path)}", err=True)


# ---- psp-bench e2e (issue 29): psp-infer's pipeline on a video or stream beside the model alone
@main.command("e2e", cls=Command)
@click.argument("models", nargs=-1, metavar="MODEL...")
@click.option("--source", required=True, metavar="INPUT",
              help="What psp-infer reads: a video file, a camera, a stream URL (see psp-infer --help).")
@backend_option("Backend(s) for every MODEL, comma-separated (auto: by file type).", several=True)
@device_option()
@batch_option("Frames per inference.", default=1)
@size_option("Input HxW for dynamic-shape models.")
@backend_flag_options()
@click.option("--frames", type=click.IntRange(min=1), default=None,
              help="Measure the first N frames (needed for an endless stream) [default: all].")
@click.option("--seconds", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Pure-inference time per round (one before and one after the end-to-end run).")
@click.option("--realtime/--no-realtime", default=None,
              help="psp-infer's real-time mode [default: on for cameras and streams, off for files].")
@json_option("Write every number to this JSON")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Write a Markdown report.")
def end_to_end_command(models, source, backend, device, batch, size, frames, seconds, realtime, json_path,
                       markdown_path, threads, **backend_flags):
    """End-to-end psp-infer throughput and per-stage times (decode, preprocess, inference, postprocess,
    encode, queue waits) of every MODEL, beside the model's pure inference throughput."""
    import json

    from benchmarks.end_to_end import format_end_to_end, measure_end_to_end
    from benchmarks.loading import candidate_options
    from benchmarks.report import write_text

    check_outputs(json_path, markdown_path)
    candidates = build_candidates(models, backend, None)
    given = dict(refuse_unhonoured_options(candidates, device, threads, backend_flags))
    results = [measure_end_to_end(c, source, batch=batch, size=size, seconds=seconds, frames=frames,
                                  realtime=realtime, log=lambda line: click.echo(line, err=True),
                                  runner_options=candidate_options(c, threads, device, given))
               for c in candidates]
    text = format_end_to_end(results)
    echo_summary(text, json_path)
    if json_path:
        with json_destination(json_path) as path:
            write_text(json.dumps([r.to_dict() for r in results], indent=1) + "\n", path)
    if markdown_path:
        write_text("```\n" + text + "\n```\n", markdown_path)
