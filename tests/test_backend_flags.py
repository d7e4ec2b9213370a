"""Backend options are declared once (pspcore.options) and every command that runs a model makes its flags from
the declarations: so a refusal can name only flags the command has. The cases are generated from the
declarations (every command x every backend x every flag that backend does not take, and --device for a
backend that cannot choose), so a new option or backend is covered without touching this file."""
import re

import pytest
from click.testing import CliRunner

from pspcore.options import DEVICE_FLAG, BackendOptions, flag_of, option
from pspcore.registry import backend_names, command_line_options, runner_class

# (command path, its click command's module:attribute): the commands that run a model on a backend
COMMANDS = {"psp-infer": "runtime.cli:main", "psp-eval": "pspnet.eval_cli:main",
            "psp-bench latency": "benchmarks.cli:latency_command",
            "psp-bench accuracy": "benchmarks.cli:accuracy_command"}
FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def _command(name: str):
    import importlib

    module, attr = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def _value_args(option_name: str) -> list[str]:
    """The flag as a user types it: a switch alone, a value flag with a value it accepts."""
    declared = [d for _, d in command_line_options()[option_name]]
    if declared[0].is_switch:
        return [flag_of(option_name)]
    choices = [c for d in declared for c in d.choices or ()]
    return [flag_of(option_name), choices[0] if choices else "2"]


def _refused_cases() -> list[tuple[str, list[str]]]:
    cases = []
    for backend in backend_names():
        declaration = runner_class(backend).options_class
        for name in sorted(command_line_options()):
            if name not in declaration.names():
                cases.append((backend, _value_args(name)))
        if not declaration.maps_device():
            cases.append((backend, [DEVICE_FLAG, "cuda"]))
    return cases


CASES = [(command, backend, args) for command in COMMANDS for backend, args in _refused_cases()]


def _help_flags(command) -> set[str]:
    """The flags the command's -h lists (an option row starts two spaces in; its help is further right)."""
    text = CliRunner().invoke(command, ["-h"]).output
    return {flag for line in text.splitlines() if line.startswith("  -")
            for flag in FLAG.findall(line[2:].split("  ")[0])}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("flags")
    model = folder / "m.onnx"
    model.write_bytes(b"never read: the refusal comes first")
    (folder / "frames").mkdir()
    return folder


def test_the_cases_cover_every_declared_flag():
    """Garbage check of the generator: every flag some backend declares is refused by some other backend."""
    refused = {args[0] for _, args in _refused_cases()}
    assert refused == {flag_of(n) for n in command_line_options()} | {DEVICE_FLAG}
    assert ("tensorrt", ["--shm"]) in _refused_cases() and ("triton", ["--device", "cuda"]) in _refused_cases()


@pytest.mark.parametrize("command,backend,args", CASES, ids=[f"{c} {b} {a[0]}" for c, b, a in CASES])
def test_every_flag_a_refusal_names_is_in_the_commands_help(files, command, backend, args):
    click_command = _command(command)
    model = str(files / "m.onnx")
    line = {"psp-infer": [model, str(files / "frames"), "-o", str(files / "out")]}.get(command, [model])
    result = CliRunner().invoke(click_command, [*line, "--backend", backend, *args])
    errors = [text for text in result.output.splitlines() if text.startswith("error: ")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    named = set(FLAG.findall(errors[0]))
    assert args[0] in named, errors[0]  # the refusal says which flag it refuses
    assert named <= _help_flags(click_command), (errors[0], named - _help_flags(click_command))


def test_a_refusal_lists_what_the_backend_takes_from_its_declaration():
    from pspcore.errors import InputError
    from pspcore.registry import check_options

    with pytest.raises(InputError) as caught:
        check_options("tensorrt", {"shm": True})
    assert str(caught.value) == "backend tensorrt does not take --shm (it takes: --device, --cuda-graphs)"
    with pytest.raises(InputError, match=r"\(it takes: --device, --threads\)$"):
        check_options("onnxruntime", {"cuda_graphs": True})  # not --providers, --device-id, --trt-max-batch


def test_a_declaration_makes_its_flag_and_refusal():
    """A backend's declaration alone decides what it takes; an option not on the command line is the Python
    API's only and never named in a refusal."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Declared(BackendOptions):
        depth: int | None = option(None, "how deep", cli=True, type=int, minimum=1)
        secret: str = option("x", "API only")

    assert Declared.flags() == ["--depth"] and not Declared.maps_device()
    assert Declared.parse("b", {"depth": 3, "secret": None}) == Declared(depth=3)
    with pytest.raises(Exception, match=r"backend b does not take --shm \(it takes: --depth\)"):
        Declared.parse("b", {"shm": True})
    with pytest.raises(Exception, match=r"does not take --device \(it takes: --depth\)"):
        Declared.device_options("b", "cuda")


def test_a_flag_declared_as_two_kinds_is_a_programming_error():
    from pspcore.cli import _backend_flag
    from pspcore.options import Declared

    switch = Declared("mode", bool, False, "a switch", True)
    value = Declared("mode", int, None, "a number", True)
    with pytest.raises(TypeError, match="--mode is declared with different types"):
        _backend_flag("mode", [("a", switch), ("b", value)])


def test_a_flag_reaches_only_an_option_declared_for_the_command_line(tmp_path):
    """--cuda-graphs exists (torch and tensorrt declare it); a backend whose option of that name were the
    Python API's only would refuse it rather than take it silently."""
    from dataclasses import dataclass

    from pspcore.cli import runner_options
    from pspcore.registry import register_backend, unregister_backend
    from pspcore.runner import Runner

    @dataclass(frozen=True)
    class Quiet(BackendOptions):
        cuda_graphs: bool = option(False, "API only")

    @register_backend
    class QuietRunner(Runner):
        name = "quiet"
        options_class = Quiet

        def run_batch(self, batch):
            return batch

    try:
        with pytest.raises(Exception, match=r"backend quiet does not take --cuda-graphs \(it takes: no options\)"):
            runner_options("quiet", str(tmp_path / "m.onnx"), cuda_graphs=True)
    finally:
        unregister_backend("quiet")
