"""Registers the fake backend for psp-bench tests and resets its clock."""
from __future__ import annotations

import pytest

from tests.benchmarks import fakes


@pytest.fixture
def fake_backend(monkeypatch):
    from pspcore import registry as backends

    monkeypatch.setitem(backends.BACKENDS, "fake", "tests.benchmarks.fakes:FakeRunner")
    monkeypatch.setattr(fakes, "CLOCK", fakes.FakeClock())
    return fakes
