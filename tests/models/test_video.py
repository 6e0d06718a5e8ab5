"""Decoding and sampling: only the needed frames, right indices, clear errors."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

import models.video
from models.synth import write_mp4
from models.video import (
    Limits,
    VideoError,
    crop,
    decode_all,
    dense_indices,
    normalize,
    probe,
    read_frames,
    uniform_indices,
)
from tests.service.fuzz import declare_samples, flat_h264

PROBE_IN_A_FRESH_INTERPRETER = """
import sys
from models.video import VideoError, probe
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


def _numbered_clip(path, frames=40, size=(48, 64), fps=10, gop=None, rotation=None):
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


def _levels(frames):
    return (frames[..., 20:28, 20:28, :].mean((-3, -2, -1)) / 5).round().astype(int)


def test_dense_and_uniform_sampling():
    np.testing.assert_array_equal(dense_indices(100, 4, 2), [[46, 48, 50, 52]])  # one clip, centred
    clips = dense_indices(100, 4, 2, num_clips=3)
    assert clips[0, 0] == 0 and clips[-1, -1] == 98 and clips.shape == (3, 4)  # last clip ends the video
    np.testing.assert_array_equal(dense_indices(5, 4, 2), [[0, 2, 4, 4]])  # short: repeat the last
    np.testing.assert_array_equal(uniform_indices(32, 4), [[4, 12, 20, 28]])  # segment centres
    assert uniform_indices(3, 8).max() == 2


@pytest.mark.parametrize("gop", [None, 5])
def test_reads_exactly_the_sampled_frames(tmp_path, gop):
    path = _numbered_clip(tmp_path / "n.mp4", gop=gop)
    indices = np.array([[3, 9, 10, 30], [31, 35, 38, 39]])
    frames, used, info = read_frames(path, indices, short_side=48)
    assert frames.shape == (2, 4, 48, 64, 3) and info.frames == 40 and info.fps == 10
    np.testing.assert_array_equal(_levels(frames), indices)
    np.testing.assert_array_equal(used, indices)


def test_sampling_inside_a_time_window(tmp_path):
    path = _numbered_clip(tmp_path / "n.mp4")
    frames, used, _ = read_frames(path, None, 48, clip_len=4, sampling="uniform", start_s=1.0, end_s=2.0)
    assert used.min() >= 10 and used.max() < 20
    np.testing.assert_array_equal(_levels(frames), used)


def test_short_video_repeats_the_last_frame(tmp_path):
    path = _numbered_clip(tmp_path / "n.mp4", frames=5)
    frames, used, _ = read_frames(path, None, 48, clip_len=8, sampling="dense", frame_interval=2)
    assert _levels(frames)[0, -1] == 4 and used.shape == (1, 8)


def test_rotation_metadata_is_honoured(tmp_path):
    path = _numbered_clip(tmp_path / "r.mp4", size=(48, 64), rotation=90)
    frames, _, _ = read_frames(path, np.array([0]), short_side=48)
    assert frames.shape == (1, 64, 48, 3)  # upright: portrait
    # 90 degrees counter-clockwise: the stored top-left marker is now bottom-left
    assert frames[0, -2, 1].min() > 200 and frames[0, 1, 1].max() < 100


def test_file_like_source_and_decode_all(tmp_path):
    path = _numbered_clip(tmp_path / "n.mp4", frames=12)
    frames, _, _ = read_frames(io.BytesIO(path.read_bytes()), np.array([7]), 48)
    assert _levels(frames)[0] == 7
    assert decode_all(path, 48) == 12


def test_bad_inputs_are_video_errors(tmp_path):
    (tmp_path / "text.mp4").write_text("hello, not a video")
    with pytest.raises(VideoError) as err:
        probe(tmp_path / "text.mp4")
    assert err.value.code == "not_a_video"
    clip = _numbered_clip(tmp_path / "n.mp4")
    with pytest.raises(VideoError) as err:
        probe(clip, Limits(max_pixels=1000))
    assert err.value.code == "too_large"
    with pytest.raises(VideoError) as err:
        probe(clip, Limits(max_duration_s=1))
    assert err.value.code == "too_long"
    with av.open(str(tmp_path / "audio.m4a"), "w") as out:  # audio only
        stream = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            out.mux(packet)
    with pytest.raises(VideoError) as err:
        probe(tmp_path / "audio.m4a")
    assert err.value.code == "no_video_stream"
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(clip.read_bytes()[:300])
    with pytest.raises(VideoError):
        read_frames(truncated, None, 48)


def test_crop_and_normalize():
    frames = np.zeros((2, 48, 64, 3), np.uint8)
    frames[..., :16, :] = 255
    three = crop(frames, 48, crops=3)
    assert three.shape == (3, 2, 48, 48, 3) and three[0, 0, 0, 0, 0] == 255 and three[2, 0, 0, -1, 0] == 0
    x = normalize(crop(frames, 48)[0], (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (3, 2, 48, 48) and x.dtype == np.float32 and x.max() == 1.0 and x.min() == -1.0


def test_synth_writer_round_trips(tmp_path):
    clip = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    write_mp4(tmp_path / "c.mp4", clip)
    info = probe(tmp_path / "c.mp4")
    assert (info.width, info.height, info.codec, info.frames) == (32, 32, "h264", 6)


def test_exact_frames_with_b_frames_and_long_gops(tmp_path):
    """B-frames are skipped while walking to a far target; the target itself must be exact."""
    path = tmp_path / "b.mp4"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.height, stream.width = 48, 64
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0", "preset": "medium", "bf": "3", "g": "120"}
        for i in range(50):
            array = np.full((48, 64, 3), 5 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    indices = np.array([[1, 27, 28, 29, 30, 31, 48, 49]])
    frames, _, _ = read_frames(path, indices, short_side=48)
    np.testing.assert_array_equal(_levels(frames), indices)


def _probe_memory(path) -> tuple[str, float]:
    """`probe(path)` in a fresh interpreter: its VideoError code ("ok" if none) and the MiB
    its peak resident memory grew by (this process's peak is long past)."""
    out = subprocess.run([sys.executable, "-c", PROBE_IN_A_FRESH_INTERPRETER, str(path)], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[2]).stdout.split()  # fmt: skip
    return out[0], float(out[1])


def _no_decoding(*args, **kwargs):
    raise AssertionError("frames were decoded")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_huge_frames_are_refused_from_the_header_before_one_is_allocated(tmp_path, monkeypatch):
    """8000x8000 H.264: 0.2 MB on disk, 96 MiB per decoded frame. FFmpeg's probe inside
    `av.open` decodes a first frame unless the decoder is held to the pixel limit."""
    path = tmp_path / "huge.mp4"
    path.write_bytes(flat_h264(8000, 8000))
    assert path.stat().st_size < 400_000
    monkeypatch.setattr(models.video, "_decode", _no_decoding)
    for call in (lambda: probe(path), lambda: read_frames(path, None, 64)):
        with pytest.raises(VideoError) as err:
            call()
        assert err.value.code == "too_large"
    code, grown_mib = _probe_memory(path)
    assert code == "too_large" and grown_mib < 64, grown_mib  # no 96 MiB frame


def test_a_resolution_change_inside_the_stream_is_held_to_the_pixel_limit():
    """The header says 64x64; frames 8 and 9 are 512x512. Over the limit, the decoder refuses
    them and the last good frame stands in (as at the end of a short video)."""
    data = flat_h264(64, 64, 8, "mpegts", level=60) + flat_h264(512, 512, 2, "mpegts", level=200, first_pts=8)
    frames, _, info = read_frames(io.BytesIO(data), np.arange(10), 32)  # default limits: both sizes decode
    assert (info.width, info.height) == (64, 64) and frames[9].mean() > frames[7].mean() + 50
    frames, _, _ = read_frames(io.BytesIO(data), np.arange(10), 32, Limits(max_pixels=128 * 128))
    assert frames.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(frames[8:], frames[[7, 7]])


def test_absurd_durations_and_sample_counts_are_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.setattr(models.video, "_decode", _no_decoding)
    buf = io.BytesIO()  # two frames 100,000 s apart
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=15)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for pts in (0, 15 * 100_000):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = pts
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with pytest.raises(VideoError) as err:
        read_frames(io.BytesIO(buf.getvalue()), None, 32)
    assert err.value.code == "too_long" and "100000 s" in str(err.value)
    # A run-length sample table: 20 million samples in the bytes of one. FFmpeg would build a
    # 450 MiB index while opening it; the tables are read first, by the duration limit.
    path = tmp_path / "samples.mp4"
    path.write_bytes(declare_samples(flat_h264(64, 64), 20_000_000))
    with pytest.raises(VideoError) as err:
        read_frames(path, None, 32)
    assert err.value.code == "too_long" and "20000000 samples" in str(err.value)
    code, grown_mib = _probe_memory(path)
    assert code == "too_long" and grown_mib < 64, grown_mib
    one_frame = flat_h264(64, 64)  # the bound: max_duration_s x 1000 fps
    assert probe(io.BytesIO(declare_samples(one_frame, 10_000)), Limits(max_duration_s=10)).width == 64
    with pytest.raises(VideoError, match="10001 samples"):
        probe(io.BytesIO(declare_samples(one_frame, 10_001)), Limits(max_duration_s=10))
