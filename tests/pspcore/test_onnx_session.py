"""The one ONNX Runtime session loader: a path, bytes or a ModelProto give the same session; threads follow
pspcore.threads (export's conversion checks included); a model that does not load is one line."""
from __future__ import annotations

import numpy as np
import pytest

from pspcore.errors import InputError, PSPError
from pspcore.onnx_session import SessionFromOnnx
from pspcore.threads import THREADS_VARIABLE

from tests.runtime.conftest import make_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _threads(session) -> int:
    return session.get_session_options().intra_op_num_threads


def test_a_path_bytes_and_a_model_proto_load_the_same_model(tmp_path):
    path = make_onnx(tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    batch = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    outputs = [SessionFromOnnx(model)().run(None, {"image": batch})[0]
               for model in (path, str(path), path.read_bytes(), proto)]
    assert all(np.array_equal(outputs[0], other) for other in outputs[1:])
    assert outputs[0].shape == (2, 4, 32, 32)


def test_threads_follow_the_one_rule(tmp_path, monkeypatch):
    path = make_onnx(tmp_path / "m.onnx")
    monkeypatch.setenv(THREADS_VARIABLE, "3")
    assert _threads(SessionFromOnnx(path)()) == 3
    assert _threads(SessionFromOnnx(path, threads=2)()) == 2
    monkeypatch.delenv(THREADS_VARIABLE)
    assert _threads(SessionFromOnnx(path)()) == 0  # ONNX Runtime's default: a thread per core


def test_export_checks_follow_the_variable(tmp_path, monkeypatch):
    """Conversion checks run on the machine's thread rule, not a fixed count of their own."""
    from export.evaluation import open_runner

    path = make_onnx(tmp_path / "m.onnx")
    monkeypatch.setenv(THREADS_VARIABLE, "3")
    with open_runner(path) as runner:
        assert _threads(runner.session) == 3
    with open_runner(path, threads=1) as runner:
        assert _threads(runner.session) == 1


def test_options_are_kept(tmp_path):
    import onnxruntime as ort

    path = make_onnx(tmp_path / "m.onnx")
    level = ort.GraphOptimizationLevel
    assert SessionFromOnnx(path)().get_session_options().graph_optimization_level == level.ORT_ENABLE_ALL
    assert SessionFromOnnx(path, optimize=False)().get_session_options().graph_optimization_level == \
        level.ORT_DISABLE_ALL
    options = ort.SessionOptions()
    options.intra_op_num_threads = 5
    assert _threads(SessionFromOnnx(path, options=options)()) == 5  # the caller's own options, as given


def test_a_model_that_does_not_load_is_one_line(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(InputError, match=r"garbage.onnx: not a loadable ONNX model: \S") as raised:
        SessionFromOnnx(garbage)()
    assert "\n" not in str(raised.value)
    with pytest.raises(PSPError, match="the in-memory model: not a loadable ONNX model") as raised:
        SessionFromOnnx(b"not a model")()
    assert not isinstance(raised.value, InputError)  # a model made in memory is not the user's input
