"""Real stream servers on loopback for the live-source tests, started and stopped by the tests: an HTTP MJPEG
server (what IP cameras serve: multipart/x-mixed-replace JPEGs, which OpenCV's FFmpeg reads) in a thread, and
an RTSP server (gst-rtsp-server, rtsp_server.py) in a process. Both can be killed mid-stream and restarted
on the same port."""
from __future__ import annotations

import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

SYSTEM_PYTHON = "/usr/bin/python3"


class MjpegServer:
    """Numbered JPEG frames at `fps` to every client on http://127.0.0.1:PORT/stream.mjpg, until killed."""

    def __init__(self, port: int = 0, fps: float = 30.0, size=(64, 48)):
        self.port, self.fps, self.size = port, fps, size
        self.sent = 0
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def jpeg(self, number: int) -> bytes:
        w, h = self.size
        frame = np.full((h, w, 3), (number * 5) % 256, np.uint8)
        frame[:, (number * 3) % w:(number * 3) % w + 4] = (0, 0, 255)
        return cv2.imencode(".jpg", frame)[1].tobytes()

    def start(self) -> "MjpegServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                while not server._stop.is_set():
                    data = server.jpeg(server.sent)
                    try:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(data) + data + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return  # the client went away
                    server.sent += 1
                    server._stop.wait(1 / server.fps)

        self._stop.clear()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_port
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def kill(self) -> None:
        """Stop serving and drop every client mid-stream."""
        self._stop.set()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "MjpegServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def rtsp_server_available() -> str | None:
    """None if the RTSP server can run here, else why not (for the skip)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"no {SYSTEM_PYTHON} for Debian's python3-gi"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                            "gi.require_version('Gst', '1.0'); from gi.repository import Gst; Gst.init(None); "
                            "assert Gst.ElementFactory.find('x264enc')"], capture_output=True)
    if probe.returncode:
        return ("gst-rtsp-server is not installed (run.sh setup installs python3-gi gir1.2-gst-rtsp-server-1.0 "
                "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly)")
    return None


class RtspServer:
    """tests/runtime/rtsp_server.py in its own process on rtsp://127.0.0.1:PORT/live."""

    def __init__(self, port: int):
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/live"

    def start(self, timeout: float = 30) -> "RtspServer":
        self.process = subprocess.Popen([SYSTEM_PYTHON, str(Path(__file__).with_name("rtsp_server.py")),
                                         str(self.port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True)
        ready = threading.Event()
        threading.Thread(target=lambda: self.process.stdout.readline() == "ready\n" and ready.set(),
                         daemon=True).start()
        if not ready.wait(timeout):
            self.kill()
            raise RuntimeError(f"the RTSP server did not start on port {self.port}")
        return self

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-stream, as a crashed camera would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
        if self.process:
            self.process.wait(10)

    def __enter__(self) -> "RtspServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def wait_for(condition, timeout: float = 30.0) -> None:
    """Poll `condition` until true; a bounded wait that fails loudly (never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting after {timeout} s")
        time.sleep(0.02)
