"""Shared pieces of the psp-* command lines: one-line errors instead of tracebacks, and common option types."""
from __future__ import annotations

import click

from pspcore.errors import PSPError


class _ReportsErrors:
    """Turns a PSPError raised by the library into `error: ...` on stderr and the error's exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PSPError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


class Command(_ReportsErrors, click.Command):
    pass


class Group(_ReportsErrors, click.Group):
    command_class = Command


Group.group_class = Group


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
