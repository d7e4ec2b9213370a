"""Registers the fake backend for psp-bench tests and resets its clock."""
from __future__ import annotations

import pytest

from tests.benchmarks import fakes


@pytest.fixture
def fake_backend(monkeypatch):
    from pspcore import registry

    registry.register_backend(fakes.FakeRunner)
    monkeypatch.setattr(fakes, "CLOCK", fakes.FakeClock())
    yield fakes
    registry.unregister_backend(fakes.FakeRunner.name)
