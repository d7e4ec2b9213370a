"""pspcore.errors: first_line (what every one-line error quotes of a library's multi-line report), the one
model-load error and the one notice."""
from __future__ import annotations

from pspcore.errors import first_line


def test_first_line_of_a_message_or_the_type_name():
    assert first_line(ValueError("  bad shape\n  at node 3\n")) == "bad shape"
    assert first_line(RuntimeError()) == "RuntimeError"
    assert first_line(OSError("  ")) == "OSError"


def test_first_line_with_its_type():
    assert first_line(KeyError("width"), with_type=True) == "KeyError: 'width'"
    assert first_line(ValueError("bad\nmore"), with_type=True) == "ValueError: bad"
    assert first_line(RuntimeError(), with_type=True) == "RuntimeError"  # not "RuntimeError: RuntimeError"


def test_load_error_is_one_line_of_the_given_kind():
    from pspcore.errors import InputError, PSPError, load_error

    error = load_error("m.onnx", "ONNX model", RuntimeError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF\nmore"))
    assert isinstance(error, InputError)
    assert str(error) == "m.onnx: not a loadable ONNX model: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF"
    assert type(load_error("x", "ONNX model", ValueError("v"), PSPError)) is PSPError


def test_notice_on_stderr_or_through_a_log(capsys):
    from pspcore.errors import notice, notice_once

    lines = []
    notice("fallback taken", lines.append)
    notice("default assumed")
    notice_once("test_notice_on_stderr_or_through_a_log", "once")
    notice_once("test_notice_on_stderr_or_through_a_log", "once")
    captured = capsys.readouterr()
    assert lines == ["notice: fallback taken"]
    assert captured.err == "notice: default assumed\nnotice: once\n" and captured.out == ""
