"""psp-export triton: add an exported model to a Triton Inference Server model repository."""
from __future__ import annotations

import click

from pspcore.cli import Command


def _batch_list(ctx, param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers such as 4,8, got {value!r}") from None
    if not sizes:
        raise click.BadParameter("give at least one batch size")
    return sizes


@click.command(cls=Command)
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "repository", required=True, type=click.Path(file_okay=False),
              help="Model repository folder (created if missing); the model goes to REPOSITORY/NAME.")
@click.option("--name", default="pspnet", show_default=True, help="Model name clients ask Triton for.")
@click.option("--max-batch", type=int, default=None,
              help="Triton max_batch_size. Default: 8 (or the engine profile's maximum) for a batch-dynamic "
                   "model, 0 (no batching) for a fixed-batch one.")
@click.option("--preferred-batch", callback=_batch_list, metavar="N[,N...]",
              help="Batch sizes the dynamic batcher aims for. Default: half the max batch and the max batch.")
@click.option("--queue-delay-us", type=click.IntRange(min=0), default=100, show_default=True,
              help="How long the dynamic batcher may hold a request to fill a preferred batch.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
              help="Model instances (per GPU with --kind gpu).")
@click.option("--kind", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True,
              help="Where the instances run. TensorRT engines need gpu.")
@click.option("--force", is_flag=True, help="Replace an existing REPOSITORY/NAME folder.")
def triton_command(model, repository, name, max_batch, preferred_batch, queue_delay_us, instances, kind, force):
    """Write a Triton model repository entry for MODEL (.onnx, or a TensorRT engine with its .json sidecar):
    config.pbtxt (inputs/outputs, dynamic batching, instance groups, the model's metadata as parameters),
    labels.txt and the model in version folder 1.

    \b
    Serve it:  docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 \\
                 -v $PWD/REPOSITORY:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
                 tritonserver --model-repository=/models
    Then run psp-infer / psp-bench with --backend triton --url localhost:8001 (see docs/triton.md).
    """
    from export.triton import export_triton

    result = export_triton(model, repository, name=name, max_batch=max_batch, preferred_batch=preferred_batch,
                           queue_delay_us=queue_delay_us, instances=instances, kind=kind, force=force)
    batching = f"max batch {result.max_batch_size}" if result.max_batch_size else "no batching"
    click.echo(f"wrote {result.model_dir} ({result.platform}, {batching}, {instances} {kind.upper()} "
               f"instance{'s' if instances > 1 else ''})")
    for note in result.notes:
        click.echo(f"notice: {note}", err=True)
