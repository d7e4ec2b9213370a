"""`psp-export onnx`: a checkpoint in, a verified ONNX model with its metadata out."""
from __future__ import annotations

import click
from tqdm import tqdm

from export.onnx import MAX_OPSET, MIN_OPSET, OPSET
from pspcore.cli import Command, batch_option, output_option, size_option

STEPS = ("load", "trace", "slim and check", "verify")


class BatchType(click.ParamType):
    """`--batch 4` (fixed) or `--batch dynamic`."""

    name = "N|dynamic"

    def convert(self, value, param, ctx):
        if value is None or (isinstance(value, str) and value.lower() == "dynamic"):
            return None
        try:
            batch = int(value)
        except (TypeError, ValueError):
            self.fail(f"batch must be a positive integer or 'dynamic', got {value!r}", param, ctx)
        if batch < 1:
            self.fail(f"batch must be at least 1, got {batch}", param, ctx)
        return batch


def _default_output(checkpoint: str) -> str:
    from pathlib import Path

    return str(Path(checkpoint).with_suffix(".onnx"))


@click.command(cls=Command)
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@output_option("Where to write the model [default: CHECKPOINT with the suffix .onnx].", dir_okay=False,
               dest="out_path")
@click.option("--arch", default=None, help="pspnet18/34/50/101/152/18-tiny; only for checkpoints that do not say "
              "(semseg and mmsegmentation checkpoints are recognised from their weights).")
@click.option("--classes", "num_classes", type=click.IntRange(min=1), default=None,
              help="Number of classes; only for checkpoints that do not say.")
@size_option("Input size H or HxW, at least 41 (the 1/8 feature map must cover the 6x6 pyramid bins) "
             "[default: the size the checkpoint records, e.g. 473x473].")
@batch_option("Fixed batch size N, or 'dynamic'.", kind=BatchType(), default="dynamic")
@click.option("--dynamic-shape", is_flag=True,
              help="Make height and width dynamic too: one model, exact at any input size.")
@click.option("--opset", type=int, default=OPSET, show_default=True, help=f"ONNX opset ({MIN_OPSET}..{MAX_OPSET}).")
@click.option("--emit", type=click.Choice(["logits", "labels"]), default="logits",
              show_default=True, help="What the model outputs: logits [N,C,H,W] float32, or labels [N,H,W] "
              "class ids (uint8 up to 256 classes): an ArgMax in the graph, far less data to copy back.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Compare ONNX Runtime (CPU) with PyTorch on a drawn scene and noise; fail the export "
              "if the error exceeds 1e-4 of the logit range or argmax agreement is below 99.99%.")
def onnx_command(checkpoint, out_path, arch, num_classes, size, batch, dynamic_shape, opset, emit, verify):
    """Export CHECKPOINT (this project's, hszhao/semseg's or mmsegmentation's) to ONNX, exactly: the pyramid's
    adaptive pooling becomes averaging matrices, so any input size exports and matches PyTorch. Class names,
    palette, mean/std and input size go into the model's metadata for psp-infer and the other tools."""
    from export.onnx.exporter import export_checkpoint

    out_path = out_path or _default_output(checkpoint)
    steps = [s for s in STEPS if verify or s != "verify"]
    with tqdm(total=len(steps), desc="export", unit="step", leave=False) as bar:
        def on_step(name: str) -> None:
            bar.set_postfix_str(name)
            bar.update(steps.index(name) - bar.n)

        on_step("load")
        result = export_checkpoint(checkpoint, out_path, arch=arch, num_classes=num_classes, size=size,
                                   batch=batch, dynamic_shape=dynamic_shape, opset=opset, output=emit,
                                   verify=verify, on_step=on_step)
        bar.update(len(steps) - bar.n)
    info = result.info
    shape = "dynamic HxW" if info.dynamic_shape else "x".join(map(str, info.input_size))
    click.echo(f"wrote {result.path} ({result.file_size / 1e6:.1f} MB, {result.node_count} nodes, "
               f"{info.arch}, {info.num_classes} classes, input {shape}, "
               f"batch {batch or 'dynamic'}, output {info.output}, {result.seconds:.1f} s)")
    for name, report in result.checks:
        click.echo(f"parity {name}: {report.describe()}")
    if not verify:
        click.echo("not verified (--no-verify)")
