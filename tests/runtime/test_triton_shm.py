"""System shared-memory regions of the Triton runner: every /dev/shm region a process creates is gone when it
exits, whether the runner released it, the server refused to unregister it, or nothing released it at all.
A stand-in client records the server calls; the regions themselves are real (tritonclient's shared_memory)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.utils.shared_memory", reason="tritonclient is the `triton` extra")

from runtime.backends import triton_shm  # noqa: E402
from runtime.backends.triton import _release_all  # noqa: E402
from runtime.backends.triton_shm import SharedRegion  # noqa: E402

SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="needs POSIX shared memory under /dev/shm")


class FakeClient:
    def __init__(self, refuse_unregister: bool = False):
        self.registered: set[str] = set()
        self.refuse_unregister = refuse_unregister

    def register_system_shared_memory(self, name, key, size):
        self.registered.add(name)

    def unregister_system_shared_memory(self, name):
        if self.refuse_unregister:
            raise ConnectionError("server gone")
        self.registered.discard(name)


def call(what, fn, *args):
    return fn(*args)


def ours() -> list[str]:
    return sorted(p.name for p in SHM.glob(f"{triton_shm.prefix()}*"))


def test_release_unregisters_and_unlinks(tmp_path):
    client = FakeClient()
    region = SharedRegion(client, call, "in")
    region.ensure(64)
    assert ours() == [region.name] and client.registered == {region.name}
    region.ensure(128)  # grows: the old one is released first
    assert ours() == [region.name]
    region.release()
    assert ours() == [] and client.registered == set() and not triton_shm._live


def test_every_region_is_destroyed_when_the_server_refuses_to_unregister():
    client = FakeClient(refuse_unregister=True)
    regions = [SharedRegion(client, call, role) for role in ("in", "out")]
    for region in regions:
        region.ensure(64)
    with pytest.raises(ConnectionError, match="server gone"):
        _release_all(regions)
    assert ours() == [] and not triton_shm._live


@pytest.mark.parametrize("ending", ["raise SystemExit(3)", "raise RuntimeError('boom')"])
def test_regions_never_released_are_unlinked_at_exit(ending):
    script = f"""
import os
from runtime.backends.triton_shm import SharedRegion
from tests.runtime.test_triton_shm import FakeClient, call
region = SharedRegion(FakeClient(), call, "in")
region.ensure(1024)
assert os.path.exists('/dev/shm/' + region.name)
print(region.name, flush=True)
{ending}
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[2])
    name = done.stdout.strip()
    assert done.returncode != 0 and name.startswith("psp_"), done.stderr
    assert not (SHM / name).exists(), "a region outlived its process"
    # Destroyed by us, not swept up by multiprocessing's resource tracker (which warns about a leak).
    assert "leaked shared_memory" not in done.stderr, done.stderr
