"""psp-serve as a user runs it: ready line, SIGTERM forwarded, exit code 0, no server left behind; a
repository the server refuses and a missing wheel become one-line errors."""
from __future__ import annotations

import importlib.util
import signal
import subprocess
import socket
import sys

import pytest

from pspcore.errors import BackendUnavailable, PSPError
from tests.runtime.conftest import make_onnx

needs_server = pytest.mark.skipif(importlib.util.find_spec("pytriton") is None,
                                  reason="the real Triton server needs nvidia-pytriton (pspnet-deploy[serve])")


@needs_server
@pytest.mark.slow
def test_psp_serve_runs_in_the_foreground_and_stops_on_sigterm(tmp_path):
    from export.triton import export_triton
    from runtime.serve import free_port

    export_triton(make_onnx(tmp_path / "m.onnx"), tmp_path / "repo", name="seg", platform="python")
    http, grpc = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runtime.serve_cli", str(tmp_path / "repo"), "--http-port",
                             str(http), "--grpc-port", str(grpc)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"ready: http://127.0.0.1:{http} grpc 127.0.0.1:{grpc}") and "models: seg" in line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert "stopped (tritonserver exit code 0)" in proc.stderr.read()
    gone = subprocess.run(["pgrep", "-f", "--", f"--http-port={http}"], capture_output=True, text=True)
    assert gone.returncode == 1 and gone.stdout == "", "tritonserver outlived psp-serve"
    for port in (http, grpc):  # the ports are free again
        with socket.socket() as s:  # (SO_REUSEADDR: connections in TIME_WAIT do not count, listeners do)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()


@needs_server
def test_a_repository_the_server_refuses_is_one_line_with_its_reason(tmp_path):
    from export.triton import export_triton
    from runtime.serve import TritonServer, free_port

    export_triton(make_onnx(tmp_path / "m.onnx"), tmp_path / "repo", name="seg")  # onnxruntime backend: absent
    with pytest.raises(PSPError, match="before it was ready: .*seg") as caught:
        with TritonServer(tmp_path / "repo", free_port(), free_port(), startup_timeout=60):
            pass
    assert "\n" not in str(caught.value) and "onnxruntime" in str(caught.value)


def test_missing_wheel_is_a_clear_error(monkeypatch):
    from runtime import serve

    monkeypatch.setattr(serve.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'pspnet-deploy\[serve\]'"):
        serve.find_wheel()
