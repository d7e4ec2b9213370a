"""Against the real Triton server (see the `triton_server` fixture): the served ensemble gives psp-infer's
labels, the dynamic batcher keeps each client's answer its own, bad requests are refused while the server
keeps serving, shared memory works on both protocols and leaves no region behind (psp-infer interrupted by
Ctrl-C included), and psp-infer / psp-bench run through it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.cli import main as bench_main
from pspcore.errors import InputError, PSPError
from pspcore.preprocess import prepare_batch
from pspcore.registry import create_runner
from pspcore.runner import FrameRunner
from runtime.cli import main as infer_main
from runtime.postprocess import labels_to_frame, to_labels

PROTOCOLS = ["grpc", "http"]
# A real Triton server and its python-backend stubs, started once per session; the xdist group keeps these tests
# on one worker (run.sh: --dist loadgroup), so one server starts, not one per worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("triton")]


def _url(server, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """A BGR picture with smooth colour regions (so the per-pixel model gives several classes)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def regions_of(server, pid: int) -> tuple[list[str], list[str]]:
    """Shared-memory regions of process `pid`: (files under /dev/shm, names the server still has registered)."""
    import tritonclient.http as client_module

    prefix = f"psp_{pid}_"
    files = sorted(p.name for p in Path("/dev/shm").glob(f"{prefix}*"))
    client = client_module.InferenceServerClient(server.http_url)
    try:
        registered = sorted(r["name"] for r in client.get_system_shared_memory_status() if r["name"].startswith(prefix))
    finally:
        client.close()
    return files, registered


def local_labels(model_path, frame_bgr: np.ndarray) -> np.ndarray:
    """What psp-infer computes for one frame on local ONNX Runtime."""
    with create_runner("onnxruntime", model_path) as runner:
        batch, boxes = prepare_batch([frame_bgr], runner.info, runner.input_spec.size)
        return labels_to_frame(to_labels(runner.infer(batch))[0], boxes[0])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("shm", [False, True])
def test_ensemble_labels_equal_local_psp_infer(triton_server, protocol, shm):
    sizes = [(32, 32), (48, 80), (7, 5), (240, 320), (1, 1)]
    frames = [photo(h, w, seed) for seed, (h, w) in enumerate(sizes)]
    with create_runner("triton", "pspnet", url=_url(triton_server, protocol), protocol=protocol,
                       shm=shm) as runner:
        assert isinstance(runner, FrameRunner) and runner.info.output == "labels"
        served = runner.infer([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames])
    assert regions_of(triton_server, os.getpid()) == ([], [])  # released by deactivate
    for frame, labels in zip(frames, served):
        expected = local_labels(triton_server.model_path, frame)
        assert labels.dtype == np.uint8 and labels.shape == frame.shape[:2]
        np.testing.assert_array_equal(labels, expected)
    assert len(np.unique(served[3])) > 1  # the labels vary across the image: a meaningful comparison


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("shm", [False, True])
def test_plain_model_logits_equal_local_onnxruntime(triton_server, protocol, shm):
    batch = np.random.default_rng(1).normal(size=(11, 3, 32, 32)).astype(np.float32)
    with create_runner("onnxruntime", triton_server.model_path) as local:
        expected = local.infer(batch)
    with create_runner("triton", "plain", url=_url(triton_server, protocol), protocol=protocol,
                       shm=shm) as runner:
        assert not isinstance(runner, FrameRunner) and runner.input_spec.max_batch == 8
        np.testing.assert_allclose(runner.infer(batch[:3]), expected[:3], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(runner.infer(batch), expected, rtol=1e-5, atol=1e-5)  # region grows
        if shm:
            files, registered = regions_of(triton_server, os.getpid())
            assert len(files) == 2 and files == registered  # one region a direction, the grown one only
    assert regions_of(triton_server, os.getpid()) == ([], [])


def test_concurrent_clients_each_get_their_own_answer(triton_server):
    frames = [photo(40 + 3 * i, 60 + 5 * i, 100 + i) for i in range(8)]
    expected = [local_labels(triton_server.model_path, f) for f in frames]
    answers: dict[int, list] = {}
    start = threading.Barrier(8)

    def client(i: int):
        protocol = PROTOCOLS[i % 2]
        with create_runner("triton", "pspnet", url=_url(triton_server, protocol), protocol=protocol) as runner:
            start.wait()
            answers[i] = [runner.infer([cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB)])[0] for _ in range(4)]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(answers) == list(range(8))
    for i, labels in answers.items():
        for answer in labels:
            np.testing.assert_array_equal(answer, expected[i])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_requests_are_refused_and_the_server_keeps_serving(triton_server, protocol):
    if protocol == "grpc":
        import tritonclient.grpc as client_module
    else:
        import tritonclient.http as client_module
    from tritonclient.utils import InferenceServerException

    client = client_module.InferenceServerClient(_url(triton_server, protocol))
    bad = {"data-type is 'FP32', but model 'pspnet' expects 'UINT8'": np.zeros((8, 8, 3), np.float32),
           "unexpected shape for input 'image'": np.zeros((8, 8), np.uint8),
           "H, W >= 1": np.zeros((0, 0, 3), np.uint8)}
    for message, array in bad.items():
        request = client_module.InferInput("image", list(array.shape),
                                           "FP32" if array.dtype == np.float32 else "UINT8")
        request.set_data_from_numpy(array)
        with pytest.raises(InferenceServerException, match=message):
            client.infer("pspnet", [request])
    good = np.full((9, 9, 3), 200, np.uint8)
    request = client_module.InferInput("image", [9, 9, 3], "UINT8")
    request.set_data_from_numpy(good)
    assert client.infer("pspnet", [request]).as_numpy("labels").shape == (9, 9)
    client.close()


def test_runner_checks_frames_before_sending(triton_server):
    with create_runner("triton", "pspnet", url=triton_server.grpc_url) as runner:
        with pytest.raises(InputError, match="takes RGB uint8 frames"):
            runner.infer([np.zeros((4, 4), np.uint8)])


def test_unknown_model_and_timeouts_are_one_line(triton_server):
    with pytest.raises(InputError, match="has no model 'missing'"):
        create_runner("triton", "missing", url=triton_server.grpc_url, retries=0)
    runner = create_runner("triton", "pspnet", url=triton_server.grpc_url, retries=0)
    runner.timeout = 0.001  # after loading: on a busy machine even the config request could miss 1 ms
    with pytest.raises(PSPError, match=r"timed out after 0.001 s; raise --timeout") as caught:
        runner.infer([np.zeros((2000, 2000, 3), np.uint8)])
    assert "\n" not in str(caught.value)
    runner.deactivate()


@pytest.mark.parametrize("shm", [False, True])
def test_psp_infer_segments_a_video_through_the_ensemble(triton_server, tiny_video, tmp_path, shm):
    out = tmp_path / "out.avi"
    args = [f"grpc://{triton_server.grpc_url}/pspnet", str(tiny_video), "-o", str(out), "--codec", "MJPG",
            "--batch", "4", "--masks-dir", str(tmp_path / "masks"), "-q"] + (["--shm"] if shm else [])
    result = CliRunner().invoke(infer_main, args)
    assert result.exit_code == 0, result.output
    assert regions_of(triton_server, os.getpid()) == ([], [])
    local = tmp_path / "local"
    result = CliRunner().invoke(infer_main, [str(triton_server.model_path), str(tiny_video), "-o",
                                             str(local / "out.avi"), "--codec", "MJPG", "--masks-dir",
                                             str(local / "masks"), "-q"])
    assert result.exit_code == 0, result.output
    served, expected = sorted((tmp_path / "masks").iterdir()), sorted((local / "masks").iterdir())
    assert len(served) == 30 and [p.name for p in served] == [p.name for p in expected]
    for a, b in zip(served, expected):
        np.testing.assert_array_equal(cv2.imread(str(a), cv2.IMREAD_UNCHANGED), cv2.imread(str(b), cv2.IMREAD_UNCHANGED))


def test_psp_bench_measures_ensemble_and_plain_model(triton_server, tmp_path):
    args = ["latency", f"grpc://{triton_server.grpc_url}/pspnet", f"http://{triton_server.http_url}/plain",
            "--batch", "1,2", "--warmup-ms", "0", "--duration-s", "0", "--min-iters", "3", "--shm"]
    result = CliRunner().invoke(bench_main, args)
    assert result.exit_code == 0, result.output
    assert "triton" in result.output and "unavailable" not in result.output.lower()


def test_psp_infer_shm_interrupted_by_ctrl_c_leaves_no_region(triton_server, tmp_path):
    """SIGINT while psp-infer --shm is sending frames: exit 130, its regions unregistered and unlinked."""
    from tests.runtime.conftest import write_video

    video = write_video(tmp_path / "long.avi", frames=600, size=(96, 72))
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli", f"grpc://{triton_server.grpc_url}/pspnet",
                             str(video), "-o", str(tmp_path / "out.avi"), "--codec", "MJPG", "--shm", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # Ctrl-C reaches it as for a user even when this test run ignores SIGINT.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if regions_of(triton_server, proc.pid)[1]:  # registered: frames are going through shared memory
                break
            time.sleep(0.02)
        assert regions_of(triton_server, proc.pid)[1], "psp-infer --shm never registered a region"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == 130, err
    assert regions_of(triton_server, proc.pid) == ([], []), "psp-infer --shm left a region behind"


def test_psp_infer_splits_round_trips_into_server_and_client_time(triton_server, tiny_video, tmp_path):
    """On the ensemble, psp-infer's stage table splits inference into the server's own time (its statistics)
    and client + network."""
    out_json = tmp_path / "run.json"
    result = CliRunner().invoke(infer_main, [f"http://{triton_server.http_url}/pspnet", str(tiny_video), "-o",
                                             str(tmp_path / "out.avi"), "--codec", "MJPG", "--json", str(out_json),
                                             "-q"])
    assert result.exit_code == 0, result.output
    stages = json.loads(out_json.read_text())["stages"]
    server, rest = stages["  in the server"], stages["  client + network"]
    assert server["count"] == rest["count"] == stages["inference"]["count"] == 30
    assert server["mean_ms"] > 0 and rest["mean_ms"] >= 0
    assert server["total_s"] + rest["total_s"] == pytest.approx(stages["inference"]["total_s"], abs=0.01)
    assert "in the server" in result.output and "client + network" in result.output
