"""One thread rule for every CPU runtime: --threads, else OMP_NUM_THREADS (which PyTorch reads by itself), else
the runtime's own default."""
from __future__ import annotations

import pytest

from pspcore.threads import THREADS_VARIABLE, cpu_threads


@pytest.mark.parametrize("value, asked, expected", [("3", None, 3), ("3", 5, 5), (None, None, None), ("", None, None),
                                                    ("0", None, None), ("many", None, None), (" 2 ", None, 2)])
def test_asked_threads_else_the_variable_else_the_runtime_default(monkeypatch, value, asked, expected):
    if value is None:
        monkeypatch.delenv(THREADS_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(THREADS_VARIABLE, value)
    assert cpu_threads(asked) == expected


def test_onnxruntime_sessions_follow_the_variable(monkeypatch):
    from pspcore.onnx_session import session_options

    monkeypatch.setenv(THREADS_VARIABLE, "1")
    assert session_options().intra_op_num_threads == 1 and session_options(2).intra_op_num_threads == 2
    monkeypatch.delenv(THREADS_VARIABLE)
    assert session_options().intra_op_num_threads == 0  # ONNX Runtime's default: a thread per core


def test_openvino_compiles_with_the_variable(monkeypatch, tmp_path):
    pytest.importorskip("openvino")
    import onnx
    from onnx import TensorProto, helper

    from runtime.backends.openvino import OpenVINORunner

    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["logits"])], "relu",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    monkeypatch.setenv(THREADS_VARIABLE, "1")
    with OpenVINORunner(path) as runner:
        assert runner._compiled.get_property("INFERENCE_NUM_THREADS") == 1
