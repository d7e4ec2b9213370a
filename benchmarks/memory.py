"""Host memory per runner: how far the process's resident set grows while a runner loads and runs its first
inferences. Linux lets a process reset its own RSS high-water mark (/proc/self/clear_refs, "5"), which
makes the peak attributable to one runner even when others are already loaded."""
from __future__ import annotations

from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")

NOTE = ("memory: host RSS growth (MiB) while a runner loads and runs one inference at each batch size; "
        "'peak' is the high-water mark above the RSS before loading (reset per runner), 'resident' what "
        "it still holds after; importing the backend's package is not counted, GPU memory is not included.")


def read_status_kib(field: str) -> int | None:
    """A 'VmRSS'/'VmHWM' value from /proc/self/status in KiB, or None off Linux."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak() -> bool:
    """Reset this process's RSS high-water mark to the current RSS; False where the kernel does not allow."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class MemoryProbe:
    """start() before loading a runner, stop() after its first inferences -> {'peak_mb', 'resident_mb'}."""

    def __init__(self):
        self._rss0: int | None = None
        self._peak_valid = False

    def start(self) -> None:
        self._peak_valid = reset_peak()
        self._rss0 = read_status_kib("VmRSS")

    def stop(self) -> dict:
        rss0, self._rss0 = self._rss0, None
        rss, hwm = read_status_kib("VmRSS"), read_status_kib("VmHWM")
        if rss0 is None or rss is None:
            return {}
        out = {"resident_mb": round((rss - rss0) / 1024, 1)}
        if self._peak_valid and hwm is not None:
            out["peak_mb"] = round((hwm - rss0) / 1024, 1)
        return out
