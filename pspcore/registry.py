"""The inference backends behind the one Runner interface, found by name. Each backend registers itself where it
is defined: installed packages declare it as an entry point (group `pspnet_deploy.backends`, see pyproject.toml),
code outside a package with `register_backend`. This module names no backend; a backend's module is imported only
when asked for, and imports its heavy package (onnxruntime-gpu, tensorrt, cuda-python, torch, tritonclient,
openvino) inside the runner, so none of them is needed until then."""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os

from pspcore.errors import BackendUnavailable, InputError, first_line
from pspcore.files import suffix_of
from pspcore.options import Declared
from pspcore.runner import Runner
from pspcore.triton_protocol import url_scheme

ENTRY_POINT_GROUP = "pspnet_deploy.backends"
CATCH_ALL = 1  # an auto_priority that means "this backend can try any file"
_registered: dict[str, type[Runner]] = {}


def register_backend(cls: type[Runner]) -> type[Runner]:
    """Class decorator: make `cls` available by its `name` (for backends outside an installed package)."""
    if not (isinstance(cls, type) and issubclass(cls, Runner)):
        raise TypeError(f"{cls!r} is not a Runner subclass")
    _registered[cls.name] = cls
    return cls


def unregister_backend(name: str) -> None:
    _registered.pop(name, None)


@functools.cache
def _entry_points() -> dict:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    """Every registered backend's name, sorted."""
    return sorted({*_entry_points(), *_registered})


def _unknown(name: str) -> InputError:
    return InputError(f"unknown backend {name!r}; choose auto or one of {', '.join(backend_names())}")


def runner_class(name: str) -> type[Runner]:
    """The Runner class registered under `name` (imports its module, which must not import heavy packages)."""
    if name in _registered:
        return _registered[name]
    entry = _entry_points().get(name)
    if entry is None:
        raise _unknown(name)
    try:
        cls = entry.load()
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name} is not installed ({first_line(exc)})") from None
    if not (isinstance(cls, type) and issubclass(cls, Runner)):
        raise BackendUnavailable(f"backend {name} ({entry.value}) is not a Runner")
    return cls


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module blocked or half-imported in sys.modules
        return False


def unavailable_reason(name: str) -> str | None:
    """None when backend `name` can run here, else why not (a missing package, no GPU, ...)."""
    try:
        cls = runner_class(name)
    except BackendUnavailable as exc:
        return str(exc)
    missing = [m for m in cls.requires if not _installed(m)]
    if missing:
        return f"needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}"
    return cls.unavailable_reason()


def available_backends() -> dict[str, str | None]:
    """Every registered backend -> None when it can run here, else the reason it cannot."""
    return {name: unavailable_reason(name) for name in backend_names()}


def resolve_backend(backend: str, model_path: str | os.PathLike) -> tuple[str, str]:
    """('auto' or a name, model) -> (backend name, why it was chosen). Auto asks every backend how well it
    runs this model (`Runner.auto_priority`) and takes the best one that can run here; when none can, the best
    one anyway, so that creating it says what is missing. A claim of CATCH_ALL ("I can try any file") counts
    only when no backend claims the model for real."""
    if backend != "auto":
        if backend not in backend_names():
            raise _unknown(backend)
        return backend, "requested"
    claims = []
    for name in backend_names():
        try:
            priority = runner_class(name).auto_priority(str(model_path))
        except BackendUnavailable:
            continue
        if priority is not None:
            claims.append((priority, name))
    claims.sort(reverse=True)
    real = [c for c in claims if c[0] > CATCH_ALL] or claims
    if not real:
        raise InputError(f"no backend runs {model_path}; installed: {', '.join(backend_names())}")
    kind = model_kind(model_path)
    for i, (_, name) in enumerate(real):
        if unavailable_reason(name) is None:
            passed = [n for _, n in real[:i]]
            return name, f"the best installed backend for {kind}" + (
                f" ({', '.join(passed)} not available here)" if passed else "")
    return real[0][1], f"the backend for {kind}"


def model_kind(model_path: str | os.PathLike) -> str:
    """How messages name a model: 'a server URL', 'a .onnx file'."""
    text = str(model_path)
    if url_scheme(text) is not None:
        return "a server URL"
    suffix = suffix_of(text)
    return f"a {suffix} file" if suffix else "a model"


def check_options(name: str, options: dict) -> dict:
    """`options` (constructor keywords) without the None ones; one that backend `name` does not declare is one
    InputError, the same for every command (psp-infer, psp-bench, psp-eval) and the Python API."""
    return runner_class(name).options_class.check(name, options)


def takes_option(name: str, option: str) -> bool:
    """Whether backend `name` declares `option` (False when the backend cannot be loaded here)."""
    try:
        return option in runner_class(name).options_class.names()
    except BackendUnavailable:
        return False


def command_line_options() -> dict[str, list[tuple[str, Declared]]]:
    """Every option some backend puts on the command line -> [(backend, its declaration)], for the commands
    that run a model: their backend flags are made from this (pspcore.cli.backend_flag_options). Backends that
    cannot be loaded here add none."""
    found: dict[str, list[tuple[str, Declared]]] = {}
    for name in backend_names():
        try:
            declared = runner_class(name).options_class.declared()
        except BackendUnavailable:
            continue
        for option in declared:
            if option.cli:
                found.setdefault(option.name, []).append((name, option))
    return found


def create_runner(backend: str, model_path: str | os.PathLike, **options) -> Runner:
    """A Runner for `model_path`, not yet active (`with runner:` loads the model). With backend='auto' the
    choice is the first entry of `runner.notes`, for the CLI to show."""
    name, why = resolve_backend(backend, model_path)
    reason = unavailable_reason(name)
    if reason:
        raise BackendUnavailable(f"backend {name} is not available here: {reason}")
    cls = runner_class(name)
    runner = cls.create(model_path, **check_options(name, options))
    if backend == "auto":
        runner.notes.insert(0, f"backend auto: {name} for {why}")
    return runner
