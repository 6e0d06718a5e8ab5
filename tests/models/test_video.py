"""Decoding and sampling: only the needed frames, right indices, clear errors."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

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
