"""psp-train: train PSPNet (or the FCN baseline with --no-ppm) from options or a YAML/JSON config."""
from __future__ import annotations

import dataclasses

import click
from click.core import ParameterSource

from pspcore.cli import SIZE, Command, DatasetType, DeviceType, ListOf
from pspnet.data.datasets import DATASETS
from pspnet.train_config import CONTEXT_SCENES, TrainConfig

# TrainConfig's `kind` -> click type; without a kind the default's own type is used.
_KINDS = {"int": int, "float": float, "str": str, "size": SIZE, "range": ListOf(click.FLOAT, count=2),
          "ints": ListOf(click.INT), "count": click.IntRange(min=1), "folder": click.Path(file_okay=False),
          "device": DeviceType(),
          "dataset": DatasetType((CONTEXT_SCENES, *DATASETS), files=True)}


def _typed(value, kind: str | None):
    """The default as a user would type it (129x129, 1,2,3,6), so --help shows it that way."""
    if isinstance(value, tuple):
        return ("x" if kind == "size" else ",").join(map(str, value))
    return value


def config_option(field: dataclasses.Field):
    """The psp-train option of one TrainConfig field: name, type, default and help all come from the field."""
    meta = field.metadata
    long = "--" + (meta["flag"] or field.name).replace("_", "-")
    names = [n for n in (meta["short"], long) if n]
    common = {"help": meta["help"], "default": _typed(field.default, meta["kind"]),
              "show_default": field.default not in (None, "")}
    if meta["kind"] == "flag":
        return click.option(*names, field.name, is_flag=True, help=meta["help"])
    if isinstance(field.default, bool):
        return click.option(f"{long}/--no-{long[2:]}", field.name, **common)
    kind = _KINDS[meta["kind"]] if meta["kind"] else type(field.default)
    return click.option(*names, field.name, type=kind, **common)


def config_options(func):
    """Every TrainConfig field as an option, in the dataclass's order."""
    for field in reversed(dataclasses.fields(TrainConfig)):
        func = config_option(field)(func)
    return func


@click.command(cls=Command)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML/JSON file of options "
              "(keys: the option names with underscores, `iterations` for --iters); options given on the "
              "command line win.")
@config_options
@click.pass_context
def main(ctx: click.Context, config_file, **options):
    """Train PSPNet with the reference recipe (SGD, poly lr, aux loss 0.4, scale/rotate/blur/flip/crop).

    \b
    Single process:  psp-train -o runs/psp --iters 500
    FCN baseline:    psp-train -o runs/fcn --no-ppm
    Pascal VOC:      psp-train --dataset voc --data-root VOCdevkit/VOC2012 --arch pspnet50 --crop 473
    Own data:        psp-train --dataset train.txt --data-root data/ --label-set ade20k --arch pspnet50
    Multi-GPU/CPU:   torchrun --standalone --nproc_per_node 2 -m pspnet.train_cli -o runs/ddp
    Resume:          psp-train -o runs/psp --resume   (same options as the first run)
    """
    from pspnet.train import train
    from pspnet.train_config import make_config, read_config_file

    values = read_config_file(config_file) if config_file else {}
    for name, value in options.items():
        explicit = ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
        if explicit or name not in values:
            values[name] = value
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
