"""The shared option pieces of pspcore.cli: the one list parser, --device, --json '-', and the one way a runner
option is refused."""
from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from pspcore.cli import SIZE, Command, ListOf, json_destination, json_option, runner_options
from pspcore.device import cuda_index, parse_device
from pspcore.errors import InputError


def _parse(kind: click.ParamType, text: str):
    return kind.convert(text, None, None)


def test_one_list_parser_for_ints_floats_and_sizes():
    assert _parse(ListOf(click.IntRange(min=1)), "1, 4,8") == (1, 4, 8)
    assert _parse(ListOf(click.FLOAT, count=2), "0.5,2") == (0.5, 2.0)
    assert _parse(ListOf(SIZE), "473,512x1024") == ((473, 473), (512, 1024))
    for kind, text in ((ListOf(click.INT), "1,,2"), (ListOf(click.INT), "1,x"), (ListOf(click.INT), ""),
                       (ListOf(click.FLOAT, count=2), "0.5"), (ListOf(click.IntRange(min=1)), "0,1")):
        with pytest.raises(click.BadParameter):
            _parse(kind, text)


def test_device_spellings():
    assert [parse_device(d) for d in ("auto", "CPU", "cuda", "cuda:3")] == ["auto", "cpu", "cuda", "cuda:3"]
    assert [cuda_index(d) for d in ("cpu", "auto", "cuda", "cuda:2")] == [None, None, 0, 2]
    for bad in ("gpu", "cuda:", "cuda:x", "cpu:1", "auto:0", ""):
        with pytest.raises(InputError, match="cuda:N"):
            parse_device(bad)


def test_json_dash_goes_to_stdout_and_the_summary_to_stderr(tmp_path):
    @click.command(cls=Command)
    @json_option("Write it")
    def tool(json_path):
        from pspcore.cli import echo_summary

        echo_summary("summary", json_path)
        if json_path:
            with json_destination(json_path) as path:
                open(path, "w").write(json.dumps({"ok": 1}))

    result = CliRunner().invoke(tool, ["--json", "-"])
    assert result.exit_code == 0 and json.loads(result.stdout) == {"ok": 1} and result.stderr == "summary\n"
    result = CliRunner().invoke(tool, ["--json", str(tmp_path / "r.json")])
    assert result.stdout == "summary\n" and json.loads((tmp_path / "r.json").read_text()) == {"ok": 1}


def test_runner_options_translate_device_and_refuse_what_a_runner_does_not_take(tmp_path):
    onnx, engine = str(tmp_path / "m.onnx"), str(tmp_path / "m.engine")
    assert runner_options("auto", onnx, device="cpu", threads=2) == {"providers": "cpu", "threads": 2}
    assert runner_options("onnxruntime", onnx, device="cuda:1") == {"providers": "cuda,cpu", "device_id": 1}
    assert runner_options("auto", onnx) == {}
    assert runner_options("auto", engine, device="cuda:2") == {"device": 2}
    with pytest.raises(InputError, match="does not take --threads"):
        runner_options("auto", engine, threads=2)
    with pytest.raises(InputError, match="CUDA GPU only"):
        runner_options("tensorrt", engine, device="cpu")
    with pytest.raises(InputError, match="does not take --device"):
        runner_options("triton", "grpc://localhost:8001/m", device="cuda")
