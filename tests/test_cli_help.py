"""The one command-line vocabulary: every psp-* command and subcommand answers -h (as an installed command, in a
fresh process, and in-process for every subcommand found by walking the click groups); -o/--output and --json
are paths wherever they appear; the commands that run a model take --device and refuse a bad one in one line."""
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import tomllib
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
DEVICE_COMMANDS = [("psp-eval",), ("psp-infer",), ("psp-bench", "latency"), ("psp-bench", "accuracy")]


def _entry(script: str) -> click.Command:
    module, attr = SCRIPTS[script].split(":")
    return getattr(importlib.import_module(module), attr)


def walk(command: click.Command, path: tuple[str, ...]):
    """(path, command) for the command and every subcommand below it (lazy ones imported)."""
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path[0])
        for name in command.list_commands(ctx):
            yield from walk(command.get_command(ctx, name), (*path, name))


ALL = [(path, command) for script in sorted(SCRIPTS) for path, command in walk(_entry(script), (script,))]
IDS = [" ".join(path) for path, _ in ALL]


def test_every_command_and_subcommand_is_found():
    names = set(IDS)
    assert {"psp-export onnx", "psp-export compare", "psp-export triton", "psp-bench latency",
            "psp-bench accuracy", "psp-serve", "psp-build-engine", "psp-train"} <= names


def _script(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed (pip install -e . registers it)")
    return found


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_installed_command_answers_dash_h(script):
    result = subprocess.run([_script(script), "-h"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage:") and "Traceback" not in result.stderr


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=IDS)
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_subcommand_answers_h_and_help(path, flag):
    result = CliRunner().invoke(_entry(path[0]), [*path[1:], flag])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage:") and f"{' '.join(path[1:])} [OPTIONS]" in result.output


def _options(command: click.Command, name: str) -> list[click.Option]:
    return [p for p in command.params if isinstance(p, click.Option) and name in p.opts + p.secondary_opts]


@pytest.mark.parametrize("path, command", ALL, ids=IDS)
def test_output_is_always_a_path(path, command):
    for flag in ("-o", "--output"):
        for option in _options(command, flag):
            assert isinstance(option.type, click.Path), f"{' '.join(path)} {flag} is {option.type.name}"
            assert option.opts[:2] == ["-o", "--output"], f"{' '.join(path)}: -o and --output are one option"


@pytest.mark.parametrize("path, command", ALL, ids=IDS)
def test_json_always_takes_a_path_or_dash(path, command):
    for option in _options(command, "--json"):
        assert not option.is_flag and isinstance(option.type, click.Path), f"{' '.join(path)} --json is a flag"
        assert option.type.allow_dash, f"{' '.join(path)} --json does not take '-'"


def test_leftover_aliases_are_gone():
    for path, command in ALL:
        for alias in ("--kind", "--root", "--out", "--report"):
            assert not _options(command, alias), f"{' '.join(path)} still has {alias}"


@pytest.mark.parametrize("path", DEVICE_COMMANDS, ids=" ".join)
def test_model_commands_take_device_and_refuse_a_bad_one(path, tmp_path):
    command = dict((p, c) for p, c in ALL)[path]
    assert _options(command, "--device"), f"{' '.join(path)} has no --device"
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    args = [*path[1:], str(model), *(["x.mp4", "-o", str(tmp_path / "o.mp4")] if path == ("psp-infer",) else []),
            "--device", "gpu7"]
    result = CliRunner().invoke(_entry(path[0]), args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1 and "--device" in errors[0] and "cuda:N" in errors[0], result.output
    assert "Traceback" not in result.output
