"""Clips whose frames can be told apart, and probes of what decoding costs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np

PROBE_IN_A_FRESH_INTERPRETER = """
import sys
from media import VideoError, probe
def peak_kib():  # VmHWM: this address space's peak (getrusage's survives exec: it would be pytest's)
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
before = peak_kib()
try:
    probe(sys.argv[1])
    code = "ok"
except VideoError as err:
    code = err.code
print(code, (peak_kib() - before) / 1024)
"""


def numbered_clip(path, frames=40, size=(48, 64), fps=10, gop=None, rotation=None):
    """Frame i shows grey level 5*i: decoded frames can be identified by their content."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast", **({"g": str(gop)} if gop else {})}
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(frames):
            array = np.full((*size, 3), 5 * i, np.uint8)
            array[:4, :4] = 255  # a marker in the stored top-left corner
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def levels(frames):
    return (frames[..., 20:28, 20:28, :].mean((-3, -2, -1)) / 5).round().astype(int)


def probe_memory(path) -> tuple[str, float]:
    """`probe(path)` in a fresh interpreter: its VideoError code ("ok" if none) and the MiB
    its peak resident memory grew by (this process's peak is long past)."""
    out = subprocess.run([sys.executable, "-c", PROBE_IN_A_FRESH_INTERPRETER, str(path)], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[2]).stdout.split()  # fmt: skip
    return out[0], float(out[1])


def no_decoding(*args, **kwargs):
    raise AssertionError("frames were decoded")
