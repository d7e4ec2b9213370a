"""The real Triton Inference Server from the `nvidia-pytriton` wheel (pspnet-deploy[serve]), run as a child
process on loopback: start it on a model repository, wait until every model is ready, stop it cleanly.
psp-serve and the tests use the same `TritonServer`.

The wheel's python backend needs its stub for the running Python next to it, and the stub must embed this
environment's interpreter. site-packages stays untouched: the backend is copied into a temporary folder at
the wheel's depth (its RPATH reaches the wheel's libraries four levels up, where a symlink points), PATH starts
with this environment's bin (the stub finds its prefix from `python3`) and LD_LIBRARY_PATH with this
interpreter's libpython (else the stub may load the system's)."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pspcore.errors import BackendUnavailable, InputError, PSPError
from pspcore.triton_protocol import DEFAULT_PORTS

INSTALL_HINT = "pip install 'pspnet-deploy[serve]'"
# Log lines a CPU-only machine always prints; they say nothing about the repository.
NOISE = ("cuda", "cudadriverhelper", "pinned_memory", "unable to create stream")


@dataclass(frozen=True)
class Wheel:
    """Where the nvidia-pytriton wheel keeps the server binary, the python backend and its stub."""

    binary: Path
    python_backend: Path
    stub: Path
    libs: Path


def find_wheel() -> Wheel:
    """The server files of the installed nvidia-pytriton wheel (found without importing pytriton)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"the Triton server is not installed (nvidia-pytriton); {INSTALL_HINT}")
    package = Path(list(spec.submodule_search_locations)[0])
    root = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    wheel = Wheel(root / "bin" / "tritonserver", root / "backends" / "python",
                  root / "python_backend_stubs" / version / "triton_python_backend_stub",
                  package.parent / "nvidia_pytriton.libs")
    for path in (wheel.binary, wheel.python_backend, wheel.libs):
        if not path.exists():
            raise BackendUnavailable(f"the nvidia-pytriton wheel lacks {path}; reinstall it ({INSTALL_HINT})")
    if not wheel.stub.exists():
        raise BackendUnavailable(f"nvidia-pytriton has no python backend stub for Python {version}")
    return wheel


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backend_dir(wheel: Wheel, work: Path) -> Path:
    """A backend directory with the python backend and this Python's stub, at the wheel's folder depth."""
    backends = work / "server" / "tritonserver" / "backends"
    shutil.copytree(wheel.python_backend, backends / "python", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(wheel.stub, backends / "python" / wheel.stub.name)
    (work / "nvidia_pytriton.libs").symlink_to(wheel.libs)  # $ORIGIN/../../../../nvidia_pytriton.libs
    return backends


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH")) if p)
    return env


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies, so no server outlives a killed client."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


GROUP_EXIT_S = 10.0  # how long stop() waits for killed processes to disappear
STOP_GRACE_S = 5.0  # beyond the server's own --exit-timeout-secs, before SIGKILL


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group `pgid`, read from /proc (Linux; elsewhere: none known)."""
    members = []
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp after the command name
            members.append(int(entry.name))
    return members


class TritonServer:
    """tritonserver on `repository`, HTTP/gRPC (and metrics, when given a port) bound to `address`.

    `with TritonServer(repo, http_port=p, grpc_port=q) as server:` starts it and waits until every model is
    ready (a PSPError with the server's own error lines if it fails or `startup_timeout` passes) and always
    stops it with its whole process group (SIGTERM, then SIGKILL after `exit_timeout` + STOP_GRACE_S) and
    removes its temporary folder."""

    def __init__(self, repository: str | os.PathLike, http_port: int = DEFAULT_PORTS["http"],
                 grpc_port: int = DEFAULT_PORTS["grpc"],
                 metrics_port: int | None = None, address: str = "127.0.0.1", startup_timeout: float = 120.0,
                 exit_timeout: int = 10, log_path: str | os.PathLike | None = None):
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            raise InputError(f"model repository not found: {repository}")
        self.http_port, self.grpc_port, self.metrics_port = int(http_port), int(grpc_port), metrics_port
        self.address, self.startup_timeout, self.exit_timeout = address, float(startup_timeout), int(exit_timeout)
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None
        self._work: Path | None = None
        self.log_file: Path | None = None

    @property
    def http_url(self) -> str:
        return f"{self.address}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    def command(self, backends: Path, binary: Path) -> list[str]:
        metrics = (["--allow-metrics=true", f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}"]
                   if self.metrics_port else ["--allow-metrics=false"])
        return [str(binary), f"--model-repository={self.repository}", f"--backend-directory={backends}",
                f"--http-address={self.address}", f"--http-port={self.http_port}",
                f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}", *metrics,
                f"--exit-timeout-secs={self.exit_timeout}", "--log-verbose=0"]

    def start(self) -> None:
        wheel = find_wheel()
        self._work = Path(tempfile.mkdtemp(prefix="psp-serve-"))
        log = self.log_path or self._work / "server.log"
        try:
            backends = _backend_dir(wheel, self._work)
            with open(log, "wb") as out:
                self.process = subprocess.Popen(self.command(backends, wheel.binary), stdout=out,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                env=_environment(), cwd=self._work, start_new_session=True,
                                                preexec_fn=_die_with_parent)
        except OSError as exc:
            self._cleanup()
            raise PSPError(f"cannot start tritonserver: {exc.strerror or exc}") from None
        self.log_file = log

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self) -> None:
        """Return once /v2/health/ready answers 200 (every model loaded); else stop and raise a PSPError."""
        deadline = time.monotonic() + self.startup_timeout
        while not self.is_ready():
            if self.process.poll() is not None:
                why = f"tritonserver exited ({self.process.returncode}) before it was ready: {self.errors()}"
                self.stop()
                raise PSPError(why)
            if time.monotonic() > deadline:
                why = f"tritonserver was not ready after {self.startup_timeout:g} s: {self.errors()}"
                self.stop()
                raise PSPError(why)
            time.sleep(0.2)

    def models(self) -> list[str]:
        """Names of the models the server reports READY."""
        import json

        request = urllib.request.Request(f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as answer:
            return sorted(m["name"] for m in json.load(answer) if m.get("state") == "READY")

    def errors(self) -> str:
        """The server's own error lines (log lines starting with E, and `error:` lines), noise dropped."""
        try:
            lines = Path(self.log_file).read_text(errors="replace").splitlines()
        except (OSError, TypeError):
            return "no server log"
        picked = [line.split("] ", 1)[-1].strip() for line in lines
                  if (line[:1] == "E" and line[1:5].isdigit()) or line.startswith("error:")]
        picked = [line for line in picked if not any(n in line.lower() for n in NOISE)]
        return "; ".join(dict.fromkeys(picked)) or (lines[-1] if lines else "empty server log")

    def send_signal(self, signum: int) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signum)

    def wait(self) -> int:
        """Block until the server exits (signals forwarded meanwhile); its exit code."""
        return self.process.wait()

    def group_alive(self) -> bool:
        """Whether any process of the server's group (the server, its python-backend stubs) still runs."""
        return self.process is not None and _group_members(self.process.pid) != []

    def _signal_group(self, signum: int) -> None:
        # The server leads its own session (start_new_session), so its pid is the group's id; the stubs it
        # forks stay in that group. ESRCH: nobody is left.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def stop(self) -> int | None:
        """SIGTERM to the server's process group, wait for the server to unload and exit (`exit_timeout` +
        STOP_GRACE_S), then SIGKILL whatever of the group is left (a hung server, stubs it orphaned) and wait,
        bounded, until the group is gone; remove the temporary folder. The server's exit code (None if killed)."""
        code = None
        if self.process is not None:
            self._signal_group(signal.SIGTERM)
            try:
                code = self.process.wait(timeout=self.exit_timeout + STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            self._signal_group(signal.SIGKILL)
            if code is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=GROUP_EXIT_S)
            deadline = time.monotonic() + GROUP_EXIT_S
            while self.group_alive() and time.monotonic() < deadline:
                time.sleep(0.05)  # killed stubs are reaped by init, not by us
        self._cleanup()
        return code

    def _cleanup(self) -> None:
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None

    def __enter__(self) -> "TritonServer":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
