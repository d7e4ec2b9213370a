"""Shared pieces of the psp-* command lines: one-line errors instead of tracebacks, and common option types."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import click

from pspcore.errors import PSPError, first_line

DEBUG_VARIABLE = "PSP_DEBUG"


def debugging() -> bool:
    """--debug (or PSP_DEBUG=1): let unexpected exceptions show their traceback."""
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def describe_unexpected(exc: Exception) -> tuple[str, int]:
    """(one line, exit code) for an exception that is no PSPError. A file-system error names the path and
    the reason; anything else is a bug: say so and how to see and report its traceback."""
    if isinstance(exc, OSError) and (exc.filename or exc.strerror):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or first_line(exc)}", 1
    return (f"unexpected {first_line(exc, with_type=True)} (a bug: rerun with --debug or {DEBUG_VARIABLE}=1 "
            "for the traceback and report it to the project's issue tracker)"), 1


class _ReportsErrors:
    """Turns a PSPError raised by the library into `error: ...` on stderr and the error's exit code; any other
    exception too, unless --debug asks for its traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PSPError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if debugging():
                raise
            message, code = describe_unexpected(exc)
            click.echo(f"error: {message}", err=True)
            ctx.exit(code)


def _debug_option(ctx: click.Context, param, value: bool) -> None:
    if value:
        os.environ[DEBUG_VARIABLE] = "1"


DEBUG = click.Option(["--debug"], is_flag=True, expose_value=False, is_eager=True, callback=_debug_option,
                     help="Show the traceback of an unexpected error (also PSP_DEBUG=1).")


HELP_OPTION_NAMES = ["-h", "--help"]


def _context_settings(given: dict | None) -> dict:
    # -h everywhere, so no command can forget it; a command may still widen its help text
    return {"help_option_names": HELP_OPTION_NAMES, "max_content_width": 100, **(given or {})}


class Command(_ReportsErrors, click.Command):
    def __init__(self, *args, context_settings: dict | None = None, **kwargs):
        super().__init__(*args, context_settings=_context_settings(context_settings), **kwargs)
        self.params.append(DEBUG)


class Group(_ReportsErrors, click.Group):
    command_class = Command

    def __init__(self, *args, context_settings: dict | None = None, **kwargs):
        super().__init__(*args, context_settings=_context_settings(context_settings), **kwargs)


Group.group_class = Group


def option_group(*options):
    """One decorator adding several click options, in the order given (options that commands share)."""
    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def parse_size(text: str) -> tuple[int, int]:
    """'473' -> (473, 473); '512x1024' -> (512, 1024) as (height, width)."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"size must be N or HxW with positive integers, got {text!r}")
    h, w = (int(parts[0]), int(parts[-1]))
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return h, w


class SizeType(click.ParamType):
    """A click option type for `--size 473` or `--size 512x1024`."""

    name = "HxW"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeType()


class ListOf(click.ParamType):
    """The one list parser: comma-separated values of `item` (a click type: click.INT, click.FLOAT, SIZE, a
    Choice, ...), e.g. `--batch 1,4,8`; `count` fixes how many. Duplicates are kept: order may matter."""

    def __init__(self, item: click.ParamType, count: int | None = None, metavar: str | None = None):
        self.item, self.count = click.types.convert_type(item), count
        self.name = f"{self.item.name} list"
        self.metavar = metavar or ",".join(["X"] * count if count else ["X", "..."])

    def get_metavar(self, param, ctx=None) -> str:
        return self.metavar

    def convert(self, value, param, ctx):
        if isinstance(value, (tuple, list)):
            return tuple(value)
        parts = [part.strip() for part in str(value).split(",")]
        if not parts or not all(parts):
            self.fail(f"expected comma-separated values ({self.metavar}), got {value!r}", param, ctx)
        if self.count is not None and len(parts) != self.count:
            self.fail(f"expected {self.count} comma-separated values ({self.metavar}), got {value!r}", param, ctx)
        try:
            return tuple(self.item.convert(part, param, ctx) for part in parts)
        except click.BadParameter as exc:
            self.fail(f"expected comma-separated values ({self.metavar}), got {value!r}: {exc.message}", param, ctx)


class DeviceType(click.ParamType):
    """--device: auto, cpu, cuda or cuda:N (pspcore.device), checked here once for every command."""

    name = "device"

    def get_metavar(self, param, ctx=None) -> str:
        return "auto|cpu|cuda[:N]"

    def convert(self, value, param, ctx):
        from pspcore.device import parse_device

        try:
            return parse_device(value)
        except PSPError as exc:
            self.fail(str(exc).replace("--device ", "", 1), param, ctx)


class BackendType(click.ParamType):
    """--backend: auto or a registered backend, looked up when the option is read (backends register late)."""

    name = "backend"

    def get_metavar(self, param, ctx=None) -> str:
        from pspcore.registry import backend_names

        return "|".join(["auto", *backend_names()])

    def convert(self, value, param, ctx):
        from pspcore.registry import backend_names

        names = ("auto", *backend_names())
        if value not in names:
            self.fail(f"{value!r} is not one of {', '.join(names)}", param, ctx)
        return value


class DatasetType(click.ParamType):
    """--dataset: a registered dataset name (`names`: the names, or a callable giving them, so the command's
    module need not import the dataset registry until the option is read) or, with `files`, a list file."""

    name = "dataset"

    def __init__(self, names, files: bool):
        self._names, self.files = names, files

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._names() if callable(self._names) else self._names)

    def get_metavar(self, param, ctx=None) -> str:
        return "NAME|LIST_FILE" if self.files else "NAME"

    def convert(self, value, param, ctx):
        if value in self.names or (self.files and value):
            return value
        self.fail(f"{value!r} is not one of {', '.join(self.names)}", param, ctx)


# ---- the shared options: each is defined here once; commands pick the help text that fits them

def output_option(help: str, *, required: bool = False, file_okay: bool = True, dir_okay: bool = True,
                  dest: str = "output", path_type=None, default=None):
    """-o/--output PATH: what the command writes."""
    return click.option("-o", "--output", dest, required=required, default=default, metavar="PATH",
                        type=click.Path(file_okay=file_okay, dir_okay=dir_okay, path_type=path_type), help=help)


def json_option(help: str, *, dest: str = "json_path"):
    """--json PATH: a JSON copy of the results; '-' writes it to standard output (see json_destination)."""
    return click.option("--json", dest, metavar="PATH", type=click.Path(dir_okay=False, allow_dash=True),
                        help=f"{help} ('-': standard output, the summary then goes to stderr).")


@contextlib.contextmanager
def json_destination(path: str | None):
    """The path a JSON writer should write to: PATH itself, or for '-' a temporary file whose text then goes
    to standard output (so every writer that takes a path serves `--json -` unchanged)."""
    if path != "-":
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="psp-json-") as folder:
        target = Path(folder) / "stdout.json"
        yield str(target)
        if target.exists():
            click.echo(target.read_text(), nl=False)


def echo_summary(text: str, json_path: str | None) -> None:
    """The human-readable summary on stdout, or on stderr when stdout carries the JSON (`--json -`)."""
    click.echo(text, err=json_path == "-")


def device_option(help: str = "Where the model runs: auto (the backend's choice), cpu, cuda or cuda:N.", *,
                  default: str = "auto"):
    return click.option("--device", type=DeviceType(), default=default, show_default=True, help=help)


def backend_option(help: str, *, several: bool = False, default: str | None = "auto"):
    """--backend NAME (several: a comma list, one run per backend)."""
    kind = ListOf(BackendType(), metavar="NAME[,NAME...]") if several else BackendType()
    return click.option("--backend", type=kind, default=default, show_default=default is not None, help=help)


def batch_option(help: str, *, several: bool = False, default="1", dest: str = "batch",
                 kind: click.ParamType | None = None):
    """--batch N (several: a comma list of batch sizes; `kind`: a command's own form, e.g. N|dynamic)."""
    positive = click.IntRange(min=1)
    kind = kind or (ListOf(positive, metavar="N[,N...]") if several else positive)
    return click.option("--batch", dest, type=kind, default=default, show_default=default is not None, help=help)


def size_option(help: str, *, default=None, kind: click.ParamType | None = None):
    """--size N or HxW (height x width; `kind`: a command's own form, e.g. MIN:OPT:MAX sizes)."""
    return click.option("--size", type=kind or SIZE, default=default, help=help)


def dataset_options(names, *, files: bool, dataset_help: str, data_root_help: str, split_help: str,
                    split_default: str | None = "val", dataset_default: str | None = None,
                    prefix: str = ""):
    """The dataset trio --dataset/--data-root/--split. `names`: the registered dataset names or a callable
    giving them (the caller's registry: this base layer names none); `files`: --dataset may also be a list
    file; `prefix` ('calib-') names a trio with a purpose of its own (--calib-dataset, --calib-split)."""
    return option_group(
        click.option(f"--{prefix}dataset", type=DatasetType(names, files), default=dataset_default,
                     show_default=dataset_default is not None, help=dataset_help),
        click.option("--data-root", type=click.Path(file_okay=False), help=data_root_help),
        click.option(f"--{prefix}split", default=split_default, show_default=split_default is not None,
                     help=split_help),
    )


def backend_flag_options():
    """The flags of every option a backend puts on the command line (pspcore.options), for the commands that run
    a model: made here, once, from the backends' declarations, so every such command has the same flags and a
    refusal can name only flags that exist. A switch, or a value whose choices are the union of the backends';
    its help says which backends take it. The command receives them by option name (None or False: not given)
    and hands them to runner_options."""
    from pspcore.registry import command_line_options

    return option_group(*(_backend_flag(name, declared)
                          for name, declared in sorted(command_line_options().items())))


def _backend_flag(name: str, declared: list) -> click.Option:
    from pspcore.options import flag_of

    types = {d.type for _, d in declared}
    if len(types) > 1:  # a programming error in a declaration: the same flag cannot mean two kinds of value
        raise TypeError(f"{flag_of(name)} is declared with different types: "
                        f"{', '.join(f'{b}: {d.type.__name__}' for b, d in declared)}")
    first = declared[0][1]
    helps: dict[str, list[str]] = {}
    for backend, d in declared:
        helps.setdefault(d.help, []).append(backend)
    text = "; ".join(f"{', '.join(backends)}: {help}" for help, backends in helps.items()) + "."
    if first.is_switch:
        return click.option(flag_of(name), name, is_flag=True, default=False, help=text)
    choices = list(dict.fromkeys(c for _, d in declared for c in d.choices or ()))
    if choices:
        kind = click.Choice(choices)
    elif first.type is int:
        kind = click.IntRange(min=max((d.minimum for _, d in declared if d.minimum is not None), default=None))
    else:
        kind = click.types.convert_type(first.type)
    metavar = None if choices else "N" if first.type is int else "VALUE"
    return click.option(flag_of(name), name, type=kind, default=None, metavar=metavar, help=text)


def runner_options(backend: str, model: str, *, device: str = "auto", **options) -> dict:
    """The constructor options for running `model` on `backend` (auto: chosen by file type): --device through
    the backend's declared device mapping, the rest (backend_flag_options' values, by option name) as given.
    An option the backend does not declare (--threads on a GPU or server runner) is an InputError here, the
    same one-line refusal create_runner gives, so every command refuses alike and a command running several
    models can refuse before it measures anything."""
    from pspcore.registry import check_options, resolve_backend, runner_class

    name, _ = resolve_backend(backend, model)
    wanted = {k: v for k, v in options.items() if v is not None and v is not False}
    try:
        declaration = runner_class(name).options_class
    except PSPError:
        return wanted  # not installed: create_runner says so, in its own words
    flags = declaration.check(name, wanted, command_line=True)  # a flag reaches only an option declared for it
    return check_options(name, {**declaration.device_options(name, device), **flags})


def num_images_option(use: str, *, default: int, when: str = ""):
    """--num-images N: how many images a calibration or comparison draws, spread evenly over the set it is given.
    `use`: what they are for ("Calibrate on"); `when`: the option that makes it apply ("--int8")."""
    return click.option("--num-images", type=click.IntRange(min=1), default=default, show_default=True, metavar="N",
                        help=f"{use} at most N images, spread evenly over the set{f' ({when})' if when else ''}.")


def max_images_option(*aliases: str):
    """--max-images N: evaluate only the first N images (an image count, never the GEMM --limit switch of
    psp-bench latency). `aliases`: an older name a command keeps accepting."""
    return click.option("--max-images", *aliases, "max_images", type=click.IntRange(min=1), default=None,
                        metavar="N", help="Evaluate only the first N images [default: all].")


class LazyGroup(Group):
    """A group whose subcommands live in other modules, imported only when used (keeps --help fast and
    keeps torch/TensorRT out of commands that do not need them). `lazy` maps name -> 'module:attribute'."""

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx, name):
        if name in self.lazy and name not in self.commands:
            import importlib

            module, attr = self.lazy[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)
