"""One label-map type everywhere (pspcore.label_maps): psp-infer's labels and PNG masks, the Triton ensemble's
declared output and what its postprocess step returns, and an exported labels graph read back by the runtime."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from export.triton.ensemble import labels_type
from pspcore.errors import InputError
from pspcore.label_maps import graph_label_dtype, label_dtype
from pspcore.model_info import ModelInfo
from pspcore.tensor_types import NUMPY_TO_TRITON
from runtime.postprocess import to_labels
from runtime.triton_steps import frame_labels


def test_the_rule():
    assert label_dtype(256) == np.uint8 and label_dtype(257) == np.uint16 and label_dtype(65536) == np.uint16
    assert label_dtype(0) == np.uint16  # unknown count: wide enough for any class id
    with pytest.raises(InputError, match="at most 65536"):
        label_dtype(65537)
    # TensorRT has no 16-bit integer tensors: a model's own labels output goes to int32 past 256 classes
    assert graph_label_dtype(256) == np.uint8 and graph_label_dtype(300) == np.int32


@pytest.mark.parametrize("classes", [4, 300])
def test_runtime_labels_follow_the_rule_from_logits_and_from_a_labels_graph(classes):
    logits = np.zeros((1, classes, 2, 2), np.float32)
    logits[0, classes - 1] = 1
    graph_labels = logits.argmax(1).astype(graph_label_dtype(classes))  # what the exported graph returns
    assert to_labels(logits).dtype == to_labels(graph_labels, classes).dtype == label_dtype(classes)
    assert (to_labels(graph_labels, classes) == classes - 1).all()


@pytest.mark.parametrize("classes", [4, 300])
def test_the_ensemble_declares_what_its_postprocess_step_returns(classes):
    model = SimpleNamespace(info=ModelInfo(num_classes=classes), outputs=[SimpleNamespace(shape=(-1, classes, 8, 8))])
    returned = frame_labels(np.zeros((1, classes, 8, 8), np.float32), np.array([8, 8, 8, 8]), classes)
    assert NUMPY_TO_TRITON[returned.dtype.name] == labels_type(model)
    labels_model = SimpleNamespace(info=ModelInfo(num_classes=0, output="labels"),
                                   outputs=[SimpleNamespace(shape=(-1, 8, 8))])
    returned = frame_labels(np.zeros((1, 8, 8), np.uint8), np.array([8, 8, 8, 8]), 0)
    assert NUMPY_TO_TRITON[returned.dtype.name] == labels_type(labels_model)
