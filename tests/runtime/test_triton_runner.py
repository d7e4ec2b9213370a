"""TritonRunner without a server, for what the real server (test_triton_real.py) does not serve: labels
outputs, fixed batches, models still loading, error sorting. Requests built with tritonclient's
InferInput/InferRequestedOutput are decoded the way Triton would, run with ONNX Runtime, and answered with real
InferResult objects (a gRPC ModelInferResponse protobuf, an HTTP binary body); server errors on closed and silent
localhost ports."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="tritonclient is the `triton` extra")
pytest.importorskip("tritonclient.http", reason="tritonclient is the `triton` extra")
import onnxruntime as ort  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from google.protobuf import json_format, text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2, service_pb2  # noqa: E402
from tritonclient.grpc._utils import _get_inference_request  # noqa: E402
from tritonclient.utils import InferenceServerException, np_to_triton_dtype  # noqa: E402

from export.triton.repository import export_triton  # noqa: E402
from pspcore.errors import InputError, PSPError  # noqa: E402
from pspcore.registry import create_runner  # noqa: E402
from runtime.backends.triton import TritonRunner, classify_error, parse_target  # noqa: E402
from tests.runtime.conftest import make_onnx  # noqa: E402


class FakeServer:
    """Serves the models of a repository written by export_triton: their parsed config.pbtxt, and inference
    with ONNX Runtime on `1/model.onnx`. `loading` answers "not ready" to that many readiness polls."""

    def __init__(self, repository: Path, loading: int = 0):
        self.configs = {d.name: text_format.Parse((d / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
                        for d in repository.iterdir()}
        self.sessions = {name: ort.InferenceSession(str(repository / name / "1/model.onnx"),
                                                    providers=["CPUExecutionProvider"]) for name in self.configs}
        self.loading = loading
        self.batches: list[int] = []
        self.closed = False

    def is_model_ready(self, name, version="", **_):
        if self.loading:
            self.loading -= 1
            return False
        return name in self.configs

    def config(self, name):
        if name not in self.configs:
            raise InferenceServerException(f"Request for unknown model: '{name}' is not found", self.not_found)
        return self.configs[name]

    def run(self, name, tensor_name, array, requested):
        self.batches.append(array.shape[0])
        outputs = self.sessions[name].run(requested, {tensor_name: array})
        return dict(zip(requested, outputs))

    def close(self):
        self.closed = True


class FakeGrpcServer(FakeServer):
    not_found = "StatusCode.NOT_FOUND"

    def get_model_config(self, name, version="", **_):
        return service_pb2.ModelConfigResponse(config=self.config(name))

    def infer(self, model_name, inputs, model_version="", outputs=None, **_):
        request = _get_inference_request(model_name=model_name, inputs=inputs, model_version=model_version,
                                         request_id="", outputs=outputs, sequence_id=0, sequence_start=False,
                                         sequence_end=False, priority=0, timeout=None, parameters=None)
        tensor = request.inputs[0]
        assert tensor.datatype == "FP32"
        array = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(list(tensor.shape))
        results = self.run(model_name, tensor.name, array, [o.name for o in request.outputs])
        response = service_pb2.ModelInferResponse(model_name=model_name)
        for name, value in results.items():
            response.outputs.add(name=name, datatype=np_to_triton_dtype(value.dtype), shape=value.shape)
            response.raw_output_contents.append(value.tobytes())
        return grpcclient.InferResult(response)


class FakeHttpServer(FakeServer):
    not_found = "400"

    def get_model_config(self, name, version="", **_):
        return json_format.MessageToDict(self.config(name), preserving_proto_field_name=True)

    def infer(self, model_name, inputs, model_version="", outputs=None, **_):
        body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
        header = json.loads(body[:json_size])
        tensor = header["inputs"][0]
        array = np.frombuffer(body[json_size:], np.float32).reshape(tensor["shape"])
        results = self.run(model_name, tensor["name"], array, [o["name"] for o in header["outputs"]])
        reply = {"model_name": model_name, "outputs": [
            {"name": n, "datatype": np_to_triton_dtype(v.dtype), "shape": list(v.shape),
             "parameters": {"binary_data_size": v.nbytes}} for n, v in results.items()]}
        head = json.dumps(reply).encode()
        return httpclient.InferenceServerClient.parse_response_body(
            head + b"".join(v.tobytes() for v in results.values()), header_length=len(head))


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("triton-repo")
    export_triton(make_onnx(d / "static.onnx", size=(33, 41)), d / "repo", name="pspnet", max_batch=4)
    export_triton(make_onnx(d / "labels.onnx", output="labels", dynamic_shape=True), d / "repo", name="labels")
    export_triton(make_onnx(d / "bare.onnx", num_classes=5, info=None), d / "repo", name="bare")
    export_triton(make_onnx(d / "fixed.onnx", batch=2), d / "repo", name="fixed")
    return d / "repo"


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    waited: list[float] = []
    monkeypatch.setattr("runtime.backends.triton.time.sleep", waited.append)
    return waited


def serve(monkeypatch, server: FakeServer) -> FakeServer:
    monkeypatch.setattr(TritonRunner, "_connect", lambda self: server)
    return server


def reference(repository: Path, name: str, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(repository / name / "1/model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": batch})[0]


@pytest.mark.parametrize("server_class", [FakeGrpcServer, FakeHttpServer])
def test_labels_output_of_a_dynamic_shape_model(monkeypatch, repository, server_class):
    serve(monkeypatch, server_class(repository))
    with TritonRunner("labels", protocol="http" if server_class is FakeHttpServer else "grpc") as runner:
        assert runner.input_spec.size is None and runner.info.output == "labels"
        batch = np.zeros((1, 3, 17, 23), np.float32)
        labels = runner.infer(batch)
    assert labels.dtype == np.uint8 and labels.shape == (1, 17, 23)
    np.testing.assert_array_equal(labels, reference(repository, "labels", batch))


def test_fixed_batch_model_runs_in_chunks_of_its_batch(monkeypatch, repository):
    server = serve(monkeypatch, FakeGrpcServer(repository))
    runner = TritonRunner("fixed")
    runner.activate()
    assert (runner.input_spec.fixed_batch, runner.input_spec.max_batch) == (2, 2)
    assert runner.infer(np.zeros((4, 3, 32, 32), np.float32)).shape == (4, 4, 32, 32)
    assert server.batches == [2, 2]
    server.batches.clear()
    assert runner.infer(np.zeros((3, 3, 32, 32), np.float32)).shape == (3, 4, 32, 32)  # the last one padded
    assert server.batches == [2, 2]


def test_model_without_parameters_gets_defaults_and_a_note(monkeypatch, repository, capsys):
    server = serve(monkeypatch, FakeGrpcServer(repository))
    server.configs["bare"].parameters.clear()
    runner = TritonRunner("bare")
    runner.activate()
    assert (runner.info.num_classes, runner.info.input_size) == (5, (32, 32))
    assert "bare carries no pspnet metadata" in capsys.readouterr().err


def test_bad_batches_are_input_errors(monkeypatch, repository):
    serve(monkeypatch, FakeGrpcServer(repository))
    runner = TritonRunner("pspnet")
    runner.activate()
    with pytest.raises(InputError, match="takes 33x41 inputs, got 32x32"):
        runner.infer(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(InputError, match=r"\[N, 3, H, W\]"):
        runner.infer(np.zeros((3, 33, 41), np.float32))


def test_unknown_model_is_a_clear_input_error_without_retries(monkeypatch, repository, sleeps):
    serve(monkeypatch, FakeGrpcServer(repository))
    with pytest.raises(InputError, match="has no model 'nope'.*unknown model"):
        TritonRunner("nope", url="example:8001").activate()
    assert sleeps == []


def test_loading_model_is_waited_for_with_backoff(monkeypatch, repository, sleeps):
    serve(monkeypatch, FakeGrpcServer(repository, loading=2))
    TritonRunner("pspnet", retries=3, backoff=0.25).activate()
    assert sleeps == [0.25, 0.5]


def test_model_that_never_gets_ready_gives_up_after_the_retries(monkeypatch, repository, sleeps):
    serve(monkeypatch, FakeGrpcServer(repository, loading=100))
    with pytest.raises(PSPError, match="'pspnet' is not ready on Triton at localhost:8001 .*tried 3 times"):
        TritonRunner("pspnet", retries=2, backoff=0.1).activate()
    assert sleeps == [0.1, 0.2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_down_is_one_line_after_bounded_retries(protocol, sleeps):
    url = f"127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(PSPError) as caught:
        TritonRunner("pspnet", url=url, protocol=protocol, retries=2, backoff=0.01).activate()
    message = str(caught.value)
    assert f"cannot reach Triton at {url} ({protocol}) (tried 3 times)" in message and "\n" not in message
    assert sleeps == [0.01, 0.02]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_silent_server_times_out_without_retrying(protocol, sleeps):
    with socket.socket() as silent:  # accepts connections (kernel backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(PSPError, match=r"timed out after 0.3 s; raise --timeout"):
            TritonRunner("pspnet", url=url, protocol=protocol, timeout=0.3, retries=2).activate()
    assert sleeps == []


def test_create_runner_passes_url_options_through_the_registry(sleeps):
    url = f"127.0.0.1:{free_port()}"
    with pytest.raises(PSPError, match=f"cannot reach Triton at {url} \\(http\\)"):
        create_runner("auto", f"http://{url}/pspnet", retries=0)
    with pytest.raises(PSPError, match=f"cannot reach Triton at {url} \\(grpc\\)"):
        create_runner("triton", "pspnet", url=url, timeout=1.0, retries=0)


def test_parse_target(repository):
    assert parse_target("pspnet", None, None) == ("pspnet", "localhost:8001", "grpc")
    assert parse_target("pspnet", None, "http") == ("pspnet", "localhost:8000", "http")
    assert parse_target("grpc://gpu-box:9001/seg", None, None) == ("seg", "gpu-box:9001", "grpc")
    assert parse_target("https://gpu-box/seg", None, None) == ("seg", "gpu-box", "http")
    assert parse_target(str(repository / "labels"), "h:1", None) == ("labels", "h:1", "grpc")
    with pytest.raises(InputError, match="names server a:1 but --url says b:2"):
        parse_target("grpc://a:1/m", "b:2", None)
    with pytest.raises(InputError, match="give the served model's name"):
        parse_target("models/seg.onnx", None, None)
    with pytest.raises(InputError, match="protocol must be grpc or http"):
        parse_target("m", None, "tcp")


@pytest.mark.parametrize("error, kind, retry", [
    (InferenceServerException("failed to connect to all addresses", "StatusCode.UNAVAILABLE"), "unavailable", True),
    (ConnectionRefusedError(111, "Connection refused"), "unavailable", True),
    (InferenceServerException("Deadline Exceeded", "StatusCode.DEADLINE_EXCEEDED"), "timeout", False),
    (TimeoutError("timed out"), "timeout", False),
    (InferenceServerException("Request for unknown model: 'x' is not found", "400"), "not_found", False),
    (InferenceServerException("Request for unknown model: 'x' has no available versions", "400"), "not_ready", True),
    (InferenceServerException("unexpected shape for input 'image'", "StatusCode.INVALID_ARGUMENT"), "rejected", False),
    (InferenceServerException("Cannot unregister shared memory region 'psp_1_0_in', it is currently in use.",
                              "StatusCode.INTERNAL"), "busy", True),
])
def test_classify_error(error, kind, retry):
    sorted_error = classify_error(error)
    assert (sorted_error.kind, sorted_error.retry) == (kind, retry) and sorted_error.detail
