"""The one spelling of a compute device on every command line: auto, cpu, cuda or cuda:N."""
from __future__ import annotations

import re

from pspcore.errors import InputError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def parse_device(text: str) -> str:
    """'CUDA:1' -> 'cuda:1'; 'cuda:0', 'cpu', 'auto' as they are; anything else is an InputError."""
    value = str(text).strip().lower()
    match = _DEVICE.match(value)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise InputError(f"--device must be {DEVICE_CHOICES}, got {text!r}")
    return value


def cuda_index(device: str) -> int | None:
    """The GPU index a device names: 'cuda' -> 0, 'cuda:N' -> N; None for cpu and auto."""
    device = parse_device(device)
    if not device.startswith("cuda"):
        return None
    return int(device.partition(":")[2] or 0)
