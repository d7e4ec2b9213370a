"""Shared pieces of the psp-* command lines: one-line errors instead of tracebacks, and common option types."""
from __future__ import annotations

import os

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
    return (f"unexpected {type(exc).__name__}: {first_line(exc)} (a bug: rerun with --debug or {DEBUG_VARIABLE}=1 "
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


class Command(_ReportsErrors, click.Command):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.append(DEBUG)


class Group(_ReportsErrors, click.Group):
    command_class = Command


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
