"""pspcore.errors.first_line: what every one-line error quotes of a library's multi-line report."""
from __future__ import annotations

from pspcore.errors import first_line


def test_first_line_of_a_message_or_the_type_name():
    assert first_line(ValueError("  bad shape\n  at node 3\n")) == "bad shape"
    assert first_line(RuntimeError()) == "RuntimeError"
    assert first_line(OSError("  ")) == "OSError"
