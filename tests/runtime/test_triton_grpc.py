"""psp-infer and psp-bench against a Triton-protocol gRPC server on localhost: the KServe v2 service that
tritonclient ships (service_pb2_grpc), answering from a repository written by psp-export triton with ONNX
Runtime. Real sockets, real tritonclient gRPC client, the CLIs exactly as a user runs them."""
from __future__ import annotations

import json
from concurrent import futures

import numpy as np
import pytest

grpc = pytest.importorskip("grpc", reason="tritonclient[grpc] is the `triton` extra")
from click.testing import CliRunner  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import np_to_triton_dtype  # noqa: E402

from benchmarks.cli import main as bench_main  # noqa: E402
from pspcore.registry import create_runner  # noqa: E402
from runtime.cli import main as infer_main  # noqa: E402

from tests.runtime.test_triton_runner import FakeServer, repository  # noqa: E402,F401 (fixture)


class TritonService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The calls our client makes, answered as Triton answers them (unknown models: NOT_FOUND)."""

    def __init__(self, models: FakeServer):
        self.models = models

    def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    def ModelReady(self, request, context):
        return service_pb2.ModelReadyResponse(ready=self.models.is_model_ready(request.name))

    def ModelConfig(self, request, context):
        if request.name not in self.models.configs:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{request.name}' is not found")
        return service_pb2.ModelConfigResponse(config=self.models.configs[request.name])

    def ModelInfer(self, request, context):
        tensor = request.inputs[0]
        array = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(list(tensor.shape))
        results = self.models.run(request.model_name, tensor.name, array, [o.name for o in request.outputs])
        response = service_pb2.ModelInferResponse(model_name=request.model_name)
        for name, value in results.items():
            response.outputs.add(name=name, datatype=np_to_triton_dtype(value.dtype), shape=value.shape)
            response.raw_output_contents.append(value.tobytes())
        return response


@pytest.fixture(scope="module")
def server(repository):  # noqa: F811
    models = FakeServer(repository)
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(TritonService(models), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    yield f"127.0.0.1:{port}", models
    grpc_server.stop(0)


def test_runner_over_the_wire(server):
    url, models = server
    with create_runner("triton", "pspnet", url=url) as runner:
        batch = np.random.default_rng(2).normal(size=(5, 3, 33, 41)).astype(np.float32)
        logits = runner.infer(batch)
    expected = models.sessions["pspnet"].run(None, {"image": batch})[0]
    np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(Exception, match="has no model 'missing'"):
        create_runner("triton", "missing", url=url)


def test_psp_infer_segments_a_video_through_the_server(server, tiny_video, tmp_path):
    url, models = server
    models.batches.clear()
    args = [f"grpc://{url}/pspnet", str(tiny_video), "-o", str(tmp_path / "out.avi"), "--codec", "MJPG",
            "--batch", "4", "--json", str(tmp_path / "classes.json"), "-q"]
    result = CliRunner().invoke(infer_main, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.avi").stat().st_size > 0
    assert sum(models.batches) == 30 and max(models.batches) == 4  # every frame, in batches of --batch
    assert json.loads((tmp_path / "classes.json").read_text())


def test_psp_bench_measures_the_served_model(server, tmp_path):
    url, _ = server
    args = ["latency", f"grpc://{url}/pspnet", "--batch", "1,2", "--warmup-ms", "0", "--duration-s", "0",
            "--min-iters", "3", "--json", str(tmp_path / "bench.json")]
    result = CliRunner().invoke(bench_main, args)
    assert result.exit_code == 0, result.output
    assert "triton" in result.output


def test_psp_infer_reports_a_down_server_in_one_line(tmp_path, tiny_video, monkeypatch):
    import socket

    waited: list[float] = []
    monkeypatch.setattr("runtime.backends.triton.time.sleep", waited.append)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = CliRunner().invoke(infer_main, [f"grpc://127.0.0.1:{port}/pspnet", str(tiny_video),
                                             "-o", str(tmp_path / "out.avi"), "-q"])
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot reach Triton at 127.0.0.1:") and "Traceback" not in result.output
    assert "tried 4 times" in result.output and waited == [0.5, 1.0, 2.0]  # the default retries and backoff
