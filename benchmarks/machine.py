"""What a benchmark ran on: the CPU, cores, threads and how busy the machine was, recorded with every report."""
from __future__ import annotations

import os
import platform
import time


def machine_info(threads: int | None) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "load_average": load_average()}


def load_average() -> float | None:
    """The 1-minute load average: above the core count, other processes were competing for the CPU."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def busy_warning(machine: dict) -> str | None:
    """A warning when the machine was busy during the run. Interleaving keeps a steady slowdown fair, but
    thread pools that spin at barriers (PyTorch's OpenMP) lose far more than others on an oversubscribed CPU."""
    loads = [v for v in (machine.get("load_average"), machine.get("load_average_end")) if v is not None]
    cores = machine.get("cores") or 0
    if not loads or not cores or max(loads) <= cores:
        return None
    return (f"machine busy: load average up to {max(loads):.1f} on {cores} cores; multi-threaded PyTorch suffers "
            "more than ONNX Runtime under contention, so speed-ups over it may be overstated")
