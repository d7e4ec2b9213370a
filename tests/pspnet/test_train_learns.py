"""Training learns: on a fixed tiny batch (no augmentation) the loss PSPNet-18 logs falls within a few iterations.
A broken optimizer step, loss, label mapping or learning-rate schedule would leave it flat or rising."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pspnet.train import METRICS, train
from pspnet.train_config import make_config


@pytest.mark.slow
def test_loss_falls_over_a_few_iterations_on_a_fixed_batch(tmp_path):
    config = make_config({"output": str(tmp_path / "run"), "scene_size": 33, "crop": (33, 33), "scenes": 2,
                          "batch": 2, "workers": 0, "threads": 2, "iterations": 4, "scale": (1.0, 1.0),
                          "rotate": 0.0, "blur": False, "flip": False, "device": "cpu", "seed": 0,
                          "save_every": 4})  # one epoch per iteration: checkpoint once, at the end
    result = train(config)
    assert result.iteration == 4 and result.stopped == "done"
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "run" / METRICS).read_text().splitlines())
              if "loss" in r]
    assert len(losses) == 4 and np.isfinite(losses).all(), losses
    # Seen here: 2.59, 1.31, 1.05, 0.79. Falling at every step, and to well under half of where it started.
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.5 * losses[0], losses
