"""`--device` values, parsed once for every command and backend: cpu, cuda, cuda:N (and auto where a backend
chooses by itself)."""
from __future__ import annotations

from dataclasses import dataclass

from pspcore.errors import InputError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


@dataclass(frozen=True)
class Device:
    kind: str  # "auto", "cpu" or "cuda"
    index: int = 0

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.kind == "cuda" and self.index else self.kind


def parse_device(value: "str | int | Device | None") -> Device:
    """'cpu' | 'cuda' | 'cuda:1' | 'auto' | None (auto) | 1 (cuda:1) -> Device, or one InputError."""
    if isinstance(value, Device):
        return value
    if value is None:
        return Device("auto")
    if isinstance(value, int):
        if value < 0:
            raise InputError(f"device index must be 0 or more, got {value}")
        return Device("cuda", value)
    text = str(value).strip().lower()
    if text in ("auto", "cpu", "cuda"):
        return Device(text)
    kind, _, index = text.partition(":")
    if kind in ("cuda", "gpu") and index.isdigit():
        return Device("cuda", int(index))
    raise InputError(f"--device must be {DEVICE_CHOICES}, got {value!r}")
