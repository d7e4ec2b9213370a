"""How many CPU threads a runtime uses when the user names none: one rule for every backend."""
from __future__ import annotations

import os

THREADS_VARIABLE = "OMP_NUM_THREADS"  # what PyTorch (OpenMP) already honours


def cpu_threads(threads: int | None = None) -> int | None:
    """The intra-op thread count for a CPU runtime: `threads` when given, else OMP_NUM_THREADS when it is set
    to a positive number, else None (the runtime's own default, one thread per core). PyTorch reads the
    variable by itself; ONNX Runtime and OpenVINO do not, so without this rule two processes each told
    OMP_NUM_THREADS=1 (two video streams, two test workers) would still each spin a thread per core on the
    same cores."""
    if threads:
        return int(threads)
    value = os.environ.get(THREADS_VARIABLE, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None
