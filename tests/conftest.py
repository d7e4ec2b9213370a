"""Shared fixtures: tiny models (ResNet-18 PSPNet, few classes) so every test runs in well under a second; and
the cores shared fairly between pytest-xdist workers."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

from pspcore.threads import THREADS_VARIABLE, cpu_threads


def _threads_per_worker() -> int:
    """The cores divided between the test processes. CI runs 2 workers on 2 cores; with a thread per core in
    each worker, PyTorch's and ONNX Runtime's spinning thread pools fight for the same cores (measured here: a
    PSPNet-18 forward 4x slower, an ONNX Runtime session 1.5x)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, (os.cpu_count() or 1) // workers)


def pytest_configure(config):
    # Before any runtime starts: ONNX Runtime, OpenVINO and PyTorch in this process and in every command the
    # tests start read it (pspcore.threads); a value the user set is kept.
    os.environ.setdefault(THREADS_VARIABLE, str(_threads_per_worker()))


def worker_threads() -> int:
    """The thread count for the tests that pass --threads themselves (demo, training)."""
    return cpu_threads() or 1


@pytest.fixture(autouse=True)
def _worker_threads():
    """Each test starts with the worker's share of torch threads, whatever an earlier test set (psp-train and the
    torch runner set the process's thread count)."""
    try:
        import torch
    except ImportError:
        yield
        return
    torch.set_num_threads(worker_threads())
    yield


def shared_folder(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder of files built once for the whole run: under pytest-xdist the first worker to ask builds it
    (under a lock, into a temporary folder renamed when complete) and the others reuse it, instead of every
    worker spending the same seconds on the same export."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, which every worker's own folder sits in
    folder = root / "shared" / name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock", timeout=600):
        if not folder.is_dir():
            partial = folder.with_name(name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            build(partial)
            partial.rename(folder)
    return folder
