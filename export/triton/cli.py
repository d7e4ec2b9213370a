"""psp-export triton: add an exported model to a Triton Inference Server model repository."""
from __future__ import annotations

import click

from pspcore.cli import Command, ListOf, output_option
from pspcore.errors import notice


@click.command(cls=Command)
@click.argument("model", type=click.Path(dir_okay=False))
@output_option("Model repository folder (created if missing); the model goes to OUTPUT/NAME.", required=True,
               file_okay=False, dest="repository")
@click.option("--name", default="pspnet", show_default=True, help="Model name clients ask Triton for.")
@click.option("--max-batch", type=int, default=None,
              help="Triton max_batch_size. Default: 8 (or the engine profile's maximum) for a batch-dynamic "
                   "model, 0 (no batching) for a fixed-batch one.")
@click.option("--preferred-batch", type=ListOf(click.IntRange(min=1), metavar="N[,N...]"),
              help="Batch sizes the dynamic batcher aims for. Default: half the max batch and the max batch.")
@click.option("--queue-delay-us", type=click.IntRange(min=0), default=100, show_default=True,
              help="How long the dynamic batcher may hold a request to fill a preferred batch.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
              help="Model instances (per GPU with --instance-kind gpu).")
@click.option("--instance-kind", "kind", type=click.Choice(["auto", "gpu", "cpu"]), default="auto",
              show_default=True,
              help="Where the instances run; auto: what the platform runs on (tensorrt_plan: gpu, python: cpu, "
                   "onnxruntime_onnx: Triton's KIND_AUTO, GPU where the server has one, else CPU).")
@click.option("--platform", type=click.Choice(["onnxruntime_onnx", "tensorrt_plan", "python"]), default=None,
              help="Model step platform. Default: onnxruntime_onnx for .onnx, tensorrt_plan for engines; python "
                   "runs ONNX Runtime inside the python backend (servers without the onnxruntime backend, "
                   "such as psp-serve's).")
@click.option("--ensemble", is_flag=True,
              help="Also write preprocess/postprocess steps and an ensemble NAME that takes an RGB uint8 "
                   "image [H, W, 3] and returns a label map [H, W] (the model step becomes NAME_model).")
@click.option("--force", is_flag=True, help="Replace existing folders of the same names.")
def triton_command(model, repository, name, max_batch, preferred_batch, queue_delay_us, instances, kind, platform,
                   ensemble, force):
    """Write a Triton model repository entry for MODEL (.onnx, or a TensorRT engine with its .json sidecar):
    config.pbtxt (inputs/outputs, dynamic batching, instance groups, the model's metadata as parameters),
    labels.txt and the model in version folder 1.

    \b
    On this machine (CPU, the server from pspnet-deploy[serve]):
      psp-export triton model.onnx -o repo --ensemble --platform python
      psp-serve repo
      psp-infer grpc://127.0.0.1:8001/pspnet video.mp4 -o out.mp4
    On GPUs: the NGC container (docs/triton.md).
    """
    from export.triton.repository import export_triton

    result = export_triton(model, repository, name=name, max_batch=max_batch, preferred_batch=preferred_batch,
                           queue_delay_us=queue_delay_us, instances=instances, kind=kind, platform=platform,
                           ensemble=ensemble, force=force)
    batching = f"max batch {result.max_batch_size}" if result.max_batch_size else "no batching"
    what = "ensemble (image -> labels) over " if ensemble else ""
    click.echo(f"wrote {result.model_dir} ({what}{result.platform}, {batching}, {instances} "
               f"{result.instance_kind.upper()} instance{'s' if instances > 1 else ''})")
    for note in result.notes:
        notice(note)
