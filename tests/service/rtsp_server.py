"""A real RTSP server for the stream tests: GStreamer's (Debian `gir1.2-gst-rtsp-server-1.0`,
`python3-gi`), run as a subprocess of the system `/usr/bin/python3` (the bindings are not in
the project's venv). Serves an H.264 MP4 at real time as `rtsp://127.0.0.1:PORT/clip` (once,
to every client); prints `ready` once it listens.

    /usr/bin/python3 tests/service/rtsp_server.py FILE.mp4 PORT
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    path, port = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( filesrc location={path} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory("/clip", factory)
    server.attach(None)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
