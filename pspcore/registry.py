"""The backends behind the one Runner interface, registered by name as "module:Class" and imported only when
used, so none of their heavy packages (onnxruntime-gpu, tensorrt, cuda-python, torch, tritonclient) is needed
until then. The PyTorch runner lives with the model (pspnet.runner); the others in runtime.backends."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from pathlib import Path

from pspcore.engine_file import ENGINE_SUFFIXES
from pspcore.errors import BackendUnavailable, InputError
from pspcore.runner import Runner

# name -> "module:RunnerClass". Each module imports its heavy package inside the runner, not at import.
BACKENDS: dict[str, str] = {
    "onnxruntime": "runtime.backends.onnxruntime:OnnxRuntimeRunner",
    "openvino": "runtime.backends.openvino:OpenVINORunner",
    "tensorrt": "runtime.backends.tensorrt:TensorRTRunner",
    "torch": "pspnet.runner:TorchRunner",
    "triton": "runtime.backends.triton:TritonRunner",
}
# The packages each backend needs besides its own module (checked without importing them).
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("onnxruntime",),
    "openvino": ("openvino",),
    "tensorrt": ("tensorrt", "cuda"),
    "torch": ("torch", "pspnet"),
    "triton": ("tritonclient",),
}
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")
TRITON_SCHEMES = ("grpc://", "http://", "https://", "triton://")


def runner_class(name: str) -> type[Runner]:
    """The Runner class registered under `name` (imports its module, which must not import heavy packages)."""
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKENDS)}")
    module, attr = BACKENDS[name].split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name} is not installed ({exc})") from None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module blocked or half-imported in sys.modules
        return False


def _unavailable_reason(name: str) -> str | None:
    missing = [m for m in REQUIREMENTS.get(name, ()) if not _installed(m)]
    if missing:
        return f"needs the {' and '.join(missing)} package{'s' if len(missing) > 1 else ''}"
    try:
        cls = runner_class(name)
    except BackendUnavailable as exc:
        return str(exc)
    # A backend may look deeper (a GPU present, a server reachable) through an optional classmethod.
    check = getattr(cls, "unavailable_reason", None)
    return check() if callable(check) else None


def available_backends() -> dict[str, str | None]:
    """Every registered backend -> None when it can run here, else the reason it cannot."""
    return {name: _unavailable_reason(name) for name in BACKENDS}


def resolve_backend(backend: str, model_path: str | os.PathLike) -> tuple[str, str]:
    """('auto' or a name, model) -> (backend name, why it was chosen). Auto picks by the model's kind:
    engine -> tensorrt, checkpoint -> torch, server URL -> triton, anything else -> onnxruntime."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; choose auto or one of {', '.join(BACKENDS)}")
        return backend, "requested"
    text = str(model_path)
    suffix = Path(text).suffix.lower()
    if text.startswith(TRITON_SCHEMES):
        return "triton", "a server URL"
    if suffix in ENGINE_SUFFIXES:
        return "tensorrt", f"a {suffix} engine"
    if suffix in CHECKPOINT_SUFFIXES:
        return "torch", f"a {suffix} checkpoint"
    if suffix == ".xml":
        return "openvino", "an OpenVINO IR"
    return "onnxruntime", f"a {suffix or 'model'} file"


def _accepted_options(cls: type[Runner], name: str, options: dict) -> dict:
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return options
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise InputError(f"backend {name} does not take {', '.join(unknown)} "
                         f"(it takes: {', '.join(p for p in params if p not in ('self', 'model_path'))})")
    return options


def create_runner(backend: str, model_path: str | os.PathLike, **options) -> Runner:
    """A ready Runner for `model_path`. With backend='auto' the choice (and, for onnxruntime, the execution
    providers actually used) is the first entry of `runner.notes`, for the CLI to show."""
    name, why = resolve_backend(backend, model_path)
    reason = _unavailable_reason(name)
    if reason:
        raise BackendUnavailable(f"backend {name} is not available here: {reason}")
    cls = runner_class(name)
    options = _accepted_options(cls, name, {k: v for k, v in options.items() if v is not None})
    runner = cls(model_path, **options)
    if backend == "auto":
        runner.notes.insert(0, f"backend auto: {runner.describe()} for {why}")
    return runner
