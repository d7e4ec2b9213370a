"""PSPNet: the model, checkpoints, data, training and evaluation. The names below are imported on first use
(PEP 562), so the torch-free parts (pspnet.labels, pspnet.data.datasets) import without torch installed."""
from __future__ import annotations

import importlib

# public name -> the module that defines it (the model's modules need torch)
_EXPORTS = {
    "create_model": "pspnet.factory", "VARIANTS": "pspnet.factory",
    "load_checkpoint": "pspnet.checkpoint", "load_model": "pspnet.checkpoint", "save_checkpoint": "pspnet.checkpoint",
    "PSPNet": "pspnet.pspnet", "PSPNetConfig": "pspnet.pspnet", "PSPNetLoss": "pspnet.pspnet",
    "LABEL_SETS": "pspnet.labels", "get_label_set": "pspnet.labels",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pspnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
