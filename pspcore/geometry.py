"""The network input size, decided once for every command: a size the model is fixed to wins, a requested size
comes next (checked against what the model accepts), then the size stored with the model, then a caller's
default (a dataset's reference crop); anything else is an error that says what to pass."""
from __future__ import annotations

from pspcore.errors import InputError
from pspcore.model_info import ModelInfo
from pspcore.runner import InputSpec, Runner

Size = tuple[int, int]


def resolve_input_size(spec: InputSpec | None, info: ModelInfo, requested: Size | None, *,
                       default: Size | None = None, model: str = "the model", option: str = "--size") -> Size:
    """(H, W) the network runs at. `spec`: what the loaded model accepts (None when unknown, e.g. a file
    not loaded); `requested`: the user's `option` (None when not given); `model` names the model in errors."""
    fixed = tuple(spec.size) if spec is not None and spec.size else None
    if fixed:
        if requested and tuple(requested) != fixed:
            raise InputError(f"{model} takes {fixed[0]}x{fixed[1]} inputs only, not {requested[0]}x{requested[1]}: "
                             f"{option} {requested[0]}x{requested[1]} needs a model exported with a dynamic shape")
        return fixed
    size = requested or info.input_size or default
    if not size:
        raise InputError(f"{model} has a dynamic input size and stores none: pass {option} HxW")
    size = (int(size[0]), int(size[1]))
    problem = spec.size_problem(size) if spec is not None else None
    if problem:
        raise InputError(f"{model} {problem}")
    return size


def runner_input_size(runner: Runner, requested: Size | None, *, default: Size | None = None,
                      option: str = "--size") -> Size:
    """resolve_input_size for a loaded Runner (its InputSpec and ModelInfo, named by its file)."""
    return resolve_input_size(runner.input_spec, runner.info, requested, default=default,
                              model=runner.display_name, option=option)
