"""A backend's options, declared once (after mmdeploy's BaseBackendParam): one dataclass per backend, defined in
the backend's module, whose fields are the keywords its runner takes. From the declaration come every command's
backend flags (pspcore.cli.backend_flag_options), the --device mapping (`from_device`) and the one refusal
text, so a refusal can only name flags that exist and a default is written in one place."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pspcore.errors import InputError
from pspcore.threads import THREADS_VARIABLE

DEVICE_FLAG = "--device"


def option(default, help: str, *, cli: bool = False, type: type | None = None,
           choices: tuple[str, ...] | None = None, minimum: int | None = None):
    """One declared option (a dataclass field). `cli`: on every command line that runs a model, as
    --<name-with-hyphens> (a switch when the default is False); otherwise the Python API's only. `type`: the
    value's type on the command line (default: the default's), `choices`/`minimum`: what it accepts there."""
    return dataclasses.field(default=default, metadata={"help": help, "cli": cli, "type": type,
                                                        "choices": choices, "minimum": minimum})


def threads_option():
    """The one declaration of --threads, for every backend with a CPU thread pool."""
    return option(None, f"CPU threads for inference [default: {THREADS_VARIABLE}, else one per core]", cli=True,
                  type=int, minimum=1)


def flag_of(name: str) -> str:
    """The command-line flag of option `name`: cuda_graphs -> --cuda-graphs (one rule, so no command and no
    refusal can spell a flag its own way)."""
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Declared:
    """What one declared option says: its keyword, type, default, help and, when on the command line, its flag."""

    name: str
    type: type
    default: object
    help: str
    cli: bool
    choices: tuple[str, ...] | None = None
    minimum: int | None = None

    @property
    def flag(self) -> str | None:
        return flag_of(self.name) if self.cli else None

    @property
    def is_switch(self) -> bool:
        return self.type is bool


@dataclass(frozen=True)
class BackendOptions:
    """The options of a backend that declares none (a subclass per backend adds its fields with `option`).
    `from_device` maps --device to constructor options; this base takes only --device auto."""

    @classmethod
    def declared(cls) -> tuple[Declared, ...]:
        found = []
        for f in dataclasses.fields(cls):
            meta, default = f.metadata, f.default
            if "cli" not in meta:
                raise TypeError(f"{cls.__name__}.{f.name} is not declared with pspcore.options.option")
            kind = meta["type"] or (str if meta["choices"] else type(default) if default is not None else str)
            found.append(Declared(f.name, kind, default, meta["help"], meta["cli"], meta["choices"],
                                  meta["minimum"]))
        return tuple(found)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(d.name for d in cls.declared())

    @classmethod
    def maps_device(cls) -> bool:
        """True when this backend chooses where its model runs (it overrides `from_device`)."""
        return cls.from_device.__func__ is not BackendOptions.from_device.__func__

    @classmethod
    def from_device(cls, device: str) -> dict:
        """The options that put the runner on `device` (auto, cpu, cuda, cuda:N; see pspcore.device). A backend
        that cannot choose (a server decides where its model runs) keeps this one, which leaves auto to it and
        makes anything else a refusal (`device_options`)."""
        return {}

    @classmethod
    def flags(cls) -> list[str]:
        """The flags a command line may give this backend: --device when it maps devices, then its own."""
        own = [d.flag for d in cls.declared() if d.cli]
        return ([DEVICE_FLAG] if cls.maps_device() else []) + own

    @classmethod
    def refusal(cls, backend: str, refused) -> InputError:
        """The one refusal text: `refused` are option keywords (or the flag --device) the backend does not
        take; the message names their flags and the flags it does take."""
        names = ", ".join(r if r.startswith("--") else flag_of(r) for r in refused)
        return InputError(f"backend {backend} does not take {names} (it takes: "
                          f"{', '.join(cls.flags()) or 'no options'})")

    @classmethod
    def device_options(cls, backend: str, device: str) -> dict:
        """`from_device`, with a backend that cannot choose refused in the one refusal text."""
        if device != "auto" and not cls.maps_device():
            raise cls.refusal(backend, [DEVICE_FLAG])
        return cls.from_device(device)

    @classmethod
    def check(cls, backend: str, given: dict, *, command_line: bool = False) -> dict:
        """`given` without its None values; a keyword this backend does not declare (with `command_line`: does
        not put on the command line) is the refusal."""
        names = {d.name for d in cls.declared() if d.cli or not command_line}
        refused = sorted(k for k, v in given.items() if v is not None and k not in names)
        if refused:
            raise cls.refusal(backend, refused)
        return {k: v for k, v in given.items() if v is not None}

    @classmethod
    def parse(cls, backend: str, given: dict) -> "BackendOptions":
        """The options a runner was built with, every undeclared one refused (the constructor's check)."""
        return cls(**cls.check(backend, given))
