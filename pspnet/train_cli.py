"""psp-train: train PSPNet (or the FCN baseline with --no-ppm) from options or a YAML/JSON config."""
from __future__ import annotations

import click
from click.core import ParameterSource

from pspcore.cli import SIZE, Command

# CLI option name -> TrainConfig field, for options whose names differ.
_FIELDS = {"iters": "iterations"}


def _scale(ctx, param, value):
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected LOW,HIGH (e.g. 0.5,2.0), got {value!r}") from None
    return low, high


def _bins(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers (e.g. 1,2,3,6), got {value!r}") from None


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML/JSON file of options "
              "(keys as below with underscores); options given on the command line win.")
@click.option("--out", default="runs/pspnet18", show_default=True, help="Run folder: last.pth (resumable), "
              "model.pth (final weights + model info), metrics.jsonl.")
@click.option("--arch", default="pspnet18", show_default=True, help="pspnet18/34/50/101/152.")
@click.option("--dataset", default="context-scenes", show_default=True,
              help="'context-scenes' (built in, generated), voc, ade20k, cityscapes (read as downloaded, from "
                   "--data-root) or a list file of 'image label' lines.")
@click.option("--data-root", type=click.Path(file_okay=False), help="voc: the VOC2012 folder; ade20k: "
              "ADEChallengeData2016; cityscapes: the folder with leftImg8bit/ and gtFine/. List files: paths are "
              "relative to this (default: the list file's folder).")
@click.option("--split", help="Split of a named dataset [default: the reference's: train_aug for voc (train "
              "without SegmentationClassAug/), train otherwise].")
@click.option("--classes", type=int, help="Number of classes (list files).")
@click.option("--label-set", default="", help="Class names/palette for list files: ade20k, cityscapes, voc, ...")
@click.option("--scene-size", type=SIZE, default="129", show_default=True,
              help="context-scenes image size, N or HxW; 2:1 or wider makes panoramas whose scene type shows "
                   "only at one end (see experiments/ppm_ablation.py).")
@click.option("--scenes", default=2000, show_default=True, help="context-scenes training images per epoch.")
@click.option("--crop", type=SIZE, default="129", show_default=True, help="Training crop, N or HxW.")
@click.option("--scale", callback=_scale, help="Random scale range LOW,HIGH [default: 0.5,2.0 (reference); "
              "0.75,1.25 on context-scenes, whose scenes must stay whole to show their context].")
@click.option("--rotate", default=10.0, show_default=True, help="Random rotation range +-degrees (0 = off).")
@click.option("--blur/--no-blur", default=True, show_default=True, help="Random Gaussian blur.")
@click.option("--flip/--no-flip", default=True, show_default=True, help="Random horizontal flip.")
@click.option("--batch", default=8, show_default=True, help="Batch size, total over all processes.")
@click.option("--epochs", type=int, help="Train this many epochs (overrides --iters).")
@click.option("--iters", type=int, default=500, show_default=True,
              help="Train this many iterations (the default takes ~10 min on a 2-core CPU).")
@click.option("--lr", default=0.01, show_default=True, help="Base lr (poly 0.9; ppm/cls/aux heads at 10x).")
@click.option("--weight-decay", default=1e-4, show_default=True)
@click.option("--aux-weight", default=0.4, show_default=True, help="Weight of the auxiliary loss.")
@click.option("--ppm/--no-ppm", default=True, show_default=True, help="--no-ppm: the FCN baseline.")
@click.option("--bins", callback=_bins, default="1,2,3,6", show_default=True, help="Pyramid bins.")
@click.option("--amp/--no-amp", default=True, show_default=True, help="Mixed precision (CUDA only).")
@click.option("--workers", default=2, show_default=True, help="DataLoader worker processes.")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", default=0, show_default=True)
@click.option("--save-every", default=0, show_default=True, help="Checkpoint every N iterations "
              "(0 = every epoch); always at the end and at the time limit.")
@click.option("--time-limit-min", type=float, help="Stop (with a checkpoint) after this many minutes.")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pth (same settings; may extend --iters).")
@click.pass_context
def main(ctx: click.Context, config_file, **options):
    """Train PSPNet with the reference recipe (SGD, poly lr, aux loss 0.4, scale/rotate/blur/flip/crop).

    \b
    Single process:  psp-train --out runs/psp --iters 500
    FCN baseline:    psp-train --out runs/fcn --no-ppm
    Pascal VOC:      psp-train --dataset voc --data-root VOCdevkit/VOC2012 --arch pspnet50 --crop 473
    Own data:        psp-train --dataset train.txt --data-root data/ --label-set ade20k --arch pspnet50
    Multi-GPU/CPU:   torchrun --standalone --nproc_per_node 2 -m pspnet.train_cli --out runs/ddp
    Resume:          psp-train --out runs/psp --resume   (same options as the first run)
    """
    from pspnet.train import train
    from pspnet.train_config import make_config, read_config_file

    values = read_config_file(config_file) if config_file else {}
    for name, value in options.items():
        explicit = ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
        field = _FIELDS.get(name, name)
        if explicit or field not in values:
            values[field] = value
    result = train(make_config(values))
    if not result.main:  # under torchrun, rank 0 speaks for the group
        return
    if result.stopped != "done":
        click.echo(f"stopped at the time limit after iteration {result.iteration}/{result.max_iterations}; "
                   f"continue with --resume", err=True)
    click.echo(f"{result.checkpoint}: iteration {result.iteration}/{result.max_iterations}, loss "
               f"{result.loss:.4f}, {result.seconds:.0f} s, {result.images_per_s:.1f} images/s")


if __name__ == "__main__":  # torchrun -m pspnet.train_cli
    main()
