"""A real RTSP server for the live-source tests, run by the system Python (Debian's python3-gi with
gst-rtsp-server; run.sh's setup installs them): `python3 rtsp_server.py PORT` serves an H.264 test pattern at
30 fps on rtsp://127.0.0.1:PORT/live and prints `ready` once it listens. The tests kill and restart it."""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = ("( videotestsrc is-live=true pattern=ball ! video/x-raw,width=64,height=48,framerate=30/1 ! "
            "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 ! "
            "rtph264pay name=pay0 pt=96 config-interval=1 )")

Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(PIPELINE)
factory.set_shared(True)
server.get_mount_points().add_factory("/live", factory)
if server.attach(None) == 0:
    sys.exit(f"cannot listen on 127.0.0.1:{sys.argv[1]}")
print("ready", flush=True)
GLib.MainLoop().run()
