"""Registers the fake backend for psp-bench tests and resets its clock."""
from __future__ import annotations

import pytest

from tests.benchmarks import fakes


@pytest.fixture
def fake_backend(monkeypatch):
    from pspcore import registry

    registry.register_backend(fakes.FakeRunner)
    monkeypatch.setattr(fakes, "CLOCK", fakes.FakeClock())
    # psp-bench measures the machine's GEMM limit by default: on small GEMMs here, the CLI tests are not about it
    from benchmarks import bench, machine

    monkeypatch.setattr(bench, "measure_gemm_limits",
                        lambda threads: machine.measure_gemm_limits(threads, n=64, seconds=0.0))
    yield fakes
    registry.unregister_backend(fakes.FakeRunner.name)
