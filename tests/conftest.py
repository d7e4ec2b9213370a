"""Shared fixtures: tiny models (ResNet-18 PSPNet, few classes) so every test runs in well under a second."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # CI has 2 cores; keep torch from oversubscribing them when tests run.
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(2)
