"""psp-serve as a user runs it: ready line, SIGTERM forwarded, exit code 0, nothing left behind (no server, no
python-backend stub, no shared-memory region of theirs, the ports free); stop() kills the whole process group
of a server that ignores SIGTERM; a repository the server refuses and a missing wheel become one-line errors."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pspcore.errors import BackendUnavailable, PSPError
from runtime.serve import _group_members
from tests.runtime.conftest import make_onnx

needs_server = pytest.mark.skipif(importlib.util.find_spec("pytriton") is None,
                                  reason="the real Triton server needs nvidia-pytriton (pspnet-deploy[serve])")


@needs_server
@pytest.mark.slow
def test_psp_serve_runs_in_the_foreground_and_stops_on_sigterm(tmp_path):
    from export.triton.repository import export_triton
    from runtime.serve import free_port

    export_triton(make_onnx(tmp_path / "m.onnx"), tmp_path / "repo", name="seg", platform="python")
    http, grpc = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "runtime.serve_cli", str(tmp_path / "repo"), "--http-port",
                             str(http), "--grpc-port", str(grpc)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"ready: http://127.0.0.1:{http} grpc 127.0.0.1:{grpc}") and "models: seg" in line
        (server,) = processes_with(f"--http-port={http}")
        group = _group_members(server)
        stubs = [pid for pid in group if "triton_python_backend_stub" in cmdline(pid)]
        assert len(stubs) == 1, "the python model runs in a stub of the server's group"
        regions = [arg for arg in cmdline(stubs[0]).split() if arg.startswith("triton_python_backend_shm_region")]
        assert regions and (Path("/dev/shm") / regions[0]).exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert "stopped (tritonserver exit code 0)" in proc.stderr.read()
    assert processes_with(f"--http-port={http}") == [], "tritonserver outlived psp-serve"
    assert _group_members(server) == [], "a python-backend stub outlived psp-serve"
    assert not (Path("/dev/shm") / regions[0]).exists(), "the server's shared memory outlived it"
    for port in (http, grpc):  # the ports are free again
        with socket.socket() as s:  # (SO_REUSEADDR: connections in TIME_WAIT do not count, listeners do)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes_with(text: str) -> list[int]:
    """Live processes whose command line contains `text` (this test's ports make it unique)."""
    found = subprocess.run(["pgrep", "-f", "--", text], capture_output=True, text=True, timeout=30)
    return [int(pid) for pid in found.stdout.split() if pid.isdigit() and int(pid) != os.getpid()]


# A "server" that ignores SIGTERM and forks a child that ignores it too (a hung server and its stub).
HUNG_SERVER = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    time.sleep(300)
    os._exit(0)
print("started", flush=True)
time.sleep(300)
"""


def test_stop_kills_the_whole_process_group_of_a_server_that_ignores_sigterm(tmp_path, monkeypatch):
    from runtime import serve

    monkeypatch.setattr(serve, "STOP_GRACE_S", 0)
    server = serve.TritonServer(tmp_path, exit_timeout=1)
    server.process = subprocess.Popen([sys.executable, "-c", HUNG_SERVER], stdout=subprocess.PIPE, text=True,
                                      start_new_session=True)
    try:
        assert server.process.stdout.readline() == "started\n"
        deadline = time.monotonic() + 30
        while len(_group_members(server.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_group_members(server.process.pid)) == 2 and server.group_alive()
        assert server.stop() is None  # killed, not exited
        assert _group_members(server.process.pid) == [] and not server.group_alive()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)


@needs_server
def test_a_repository_the_server_refuses_is_one_line_with_its_reason(tmp_path):
    from export.triton.repository import export_triton
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
