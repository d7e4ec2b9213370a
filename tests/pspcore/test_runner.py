"""The Runner base class does the shared work once: check a batch against the InputSpec, split a batch larger
than the model takes, pad one smaller than it needs, time the calls. Checked with a runner that records calls."""
from __future__ import annotations

import numpy as np
import pytest

from pspcore.errors import InputError
from pspcore.model_info import fallback_info
from pspcore.runner import InputSpec, Runner


class Recording(Runner):
    """Logits = the first input channel's mean per image, broadcast to 2 classes; records each call's batch."""

    name = "recording"

    def __init__(self, spec: InputSpec):
        super().__init__("m.onnx")
        self.input_spec = spec
        self.calls: list[int] = []

    def run_batch(self, batch):
        assert batch.dtype == np.float32 and batch.flags["C_CONTIGUOUS"]
        self.calls.append(len(batch))
        return np.repeat(batch[:, :1], 2, axis=1)


def images(n: int, size=(8, 8)) -> np.ndarray:
    return np.arange(n, dtype=np.float64)[:, None, None, None] * np.ones((n, 3, *size))


@pytest.mark.parametrize("spec, n, calls", [
    (InputSpec(size=None), 5, [5]),  # any batch: one call
    (InputSpec(size=None, max_batch=2), 5, [2, 2, 1]),  # split into the largest calls
    (InputSpec(size=None, min_batch=2, max_batch=4), 5, [4, 2]),  # the last one padded to the minimum
    (InputSpec(size=None, fixed_batch=3, min_batch=3, max_batch=3), 4, [3, 3]),  # exactly 3 a call
])
def test_split_and_pad(spec, n, calls):
    runner = Recording(spec)
    out = runner.infer(images(n))
    assert runner.calls == calls
    assert out.shape == (n, 2, 8, 8)
    np.testing.assert_array_equal(out[:, 0, 0, 0], np.arange(n))  # every image its own answer, in order
    assert runner.is_active and runner.last_timing.compute_ms > 0


def test_size_and_shape_problems_are_input_errors():
    runner = Recording(InputSpec(size=(8, 8)))
    with pytest.raises(InputError, match="m.onnx takes 8x8 inputs, got 9x8"):
        runner.infer(images(1, (9, 8)))
    with pytest.raises(InputError, match=r"\[N, 3, H, W\]"):
        runner.infer(np.zeros((1, 1, 8, 8)))
    with pytest.raises(InputError, match=r"\[N, 3, H, W\]"):
        runner.infer(np.zeros((0, 3, 8, 8)))
    bounded = Recording(InputSpec(size=None, min_size=(8, 8), max_size=(16, 16)))
    bounded.infer(images(1, (16, 8)))
    with pytest.raises(InputError, match=r"from 8x8 to 16x16 \(its build profile\), got 17x8"):
        bounded.infer(images(1, (17, 8)))


def test_whole_batch_problem_is_what_a_benchmark_refuses():
    assert InputSpec(size=None, max_batch=4).whole_batch_problem(8) == "the model accepts batches up to 4, not 8"
    assert InputSpec(size=None, min_batch=2).whole_batch_problem(1) == "the model needs batches of at least 2"
    assert InputSpec(size=None, fixed_batch=2, max_batch=2).whole_batch_problem(8) is None  # whole calls


def test_one_fallback_for_models_without_metadata(capsys):
    logits = fallback_info("/x/foreign.onnx", [None, 3, 65, 97], "out", [-1, 7, 65, 97])
    assert (logits.num_classes, logits.input_size, logits.output, len(logits.palette)) == (7, (65, 97), "logits", 7)
    labels = fallback_info("/x/labels.onnx", ["N", 3, "H", "W"], "labels", ["N", "H", "W"])
    assert (labels.num_classes, labels.input_size, labels.output, len(labels.palette)) == (0, None, "labels", 256)
    err = capsys.readouterr().err
    assert "foreign.onnx carries no pspnet metadata; assuming 7 classes" in err and "assuming unknown" in err
