"""Decoding: only the planned frames, the right ones, clear errors, limits from the header."""

from __future__ import annotations

import io
import sys

import av
import numpy as np
import pytest

import media.decode
from media import Limits, VideoError, probe, read_frames
from media.sampling import clip_plan
from models.synth import write_mp4
from tests.media.clips import levels, no_decoding, numbered_clip, probe_memory
from tests.service.fuzz import flat_h264


@pytest.mark.parametrize("gop", [None, 5])
def test_reads_exactly_the_sampled_frames(tmp_path, gop):
    path = numbered_clip(tmp_path / "n.mp4", gop=gop)
    indices = np.array([[3, 9, 10, 30], [31, 35, 38, 39]])
    frames, used, info = read_frames(path, indices, short_side=48)
    assert frames.shape == (2, 4, 48, 64, 3) and info.frames == 40 and info.fps == 10
    np.testing.assert_array_equal(levels(frames), indices)
    np.testing.assert_array_equal(used, indices)


def test_sampling_inside_a_time_window(tmp_path):
    path = numbered_clip(tmp_path / "n.mp4")
    frames, used, _ = read_frames(path, clip_plan(4, "uniform", 4, start_s=1.0, end_s=2.0), 48)
    assert used.min() >= 10 and used.max() < 20
    np.testing.assert_array_equal(levels(frames), used)


def test_short_video_repeats_the_last_frame(tmp_path):
    path = numbered_clip(tmp_path / "n.mp4", frames=5)
    frames, used, _ = read_frames(path, clip_plan(8, "dense", 2), 48)
    assert levels(frames)[0, -1] == 4 and used.shape == (1, 8)


def test_rotation_metadata_is_honoured(tmp_path):
    path = numbered_clip(tmp_path / "r.mp4", size=(48, 64), rotation=90)
    frames, _, _ = read_frames(path, np.array([0]), short_side=48)
    assert frames.shape == (1, 64, 48, 3)  # upright: portrait
    # 90 degrees counter-clockwise: the stored top-left marker is now bottom-left
    assert frames[0, -2, 1].min() > 200 and frames[0, 1, 1].max() < 100


def test_file_like_source(tmp_path):
    path = numbered_clip(tmp_path / "n.mp4", frames=12)
    frames, _, _ = read_frames(io.BytesIO(path.read_bytes()), np.array([7]), 48)
    assert levels(frames)[0] == 7


def test_bad_inputs_are_video_errors(tmp_path):
    (tmp_path / "text.mp4").write_text("hello, not a video")
    with pytest.raises(VideoError) as err:
        probe(tmp_path / "text.mp4")
    assert err.value.code == "not_a_video"
    with pytest.raises(VideoError) as err:
        probe(tmp_path / "missing.mp4")
    assert err.value.code == "not_found" and str(err.value) == f"no such file: {tmp_path / 'missing.mp4'}"
    clip = numbered_clip(tmp_path / "n.mp4")
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
        read_frames(truncated, clip_plan(4, "dense", 4), 48)


def test_a_path_is_read_as_a_file_never_as_an_ffmpeg_protocol(tmp_path, monkeypatch):
    """A manifest's or a command line's path named like an FFmpeg URL ("concat:a|b" joined two
    files, "tcp://", "pipe:0") opened that protocol; now only a file of that name is read."""
    clip = numbered_clip(tmp_path / "n.mp4", frames=12)
    monkeypatch.chdir(tmp_path)
    for name in (f"concat:{clip}|{clip}", "pipe:0", "tcp://127.0.0.1:9", "http:/127.0.0.1/x.mp4"):
        with pytest.raises(VideoError) as err:
            probe(name)
        assert (err.value.code, str(err.value)) == ("not_found", f"no such file: {name}")
    named = tmp_path / "concat:n.mp4"  # a file that really has such a name
    named.write_bytes(clip.read_bytes())
    assert probe("concat:n.mp4").frames == 12
    with pytest.raises(VideoError, match=f"not a file: {tmp_path}$"):
        probe(tmp_path)


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
    np.testing.assert_array_equal(levels(frames), indices)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_huge_frames_are_refused_from_the_header_before_one_is_allocated(tmp_path, monkeypatch):
    """8000x8000 H.264: 0.2 MB on disk, 96 MiB per decoded frame. FFmpeg's probe inside
    `av.open` decodes a first frame unless the decoder is held to the pixel limit."""
    path = tmp_path / "huge.mp4"
    path.write_bytes(flat_h264(8000, 8000))
    assert path.stat().st_size < 400_000
    monkeypatch.setattr(media.decode, "_decode", no_decoding)
    for call in (lambda: probe(path), lambda: read_frames(path, np.arange(4), 64)):
        with pytest.raises(VideoError) as err:
            call()
        assert err.value.code == "too_large"
    code, grown_mib = probe_memory(path)
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


def test_a_seek_is_taken_when_the_index_shows_a_keyframe_worth_jumping_to():
    from media.decode import worth_seeking

    assert worth_seeking(76, 50, -1, 93)  # the first target: from keyframe 76, not from 0
    assert not worth_seeking(76, 50, 93, 97)  # the next dense target: decode on
    assert not worth_seeking(137, 50, 133, 141)  # keyframe 137 only 4 frames ahead: not worth a seek
    assert worth_seeking(137, 50, 80, 200)  # keyframe 137 far ahead
    assert not worth_seeking(0, 50, -1, 20)  # no keyframe between: decode from the start
    assert not worth_seeking(None, 50, -1, 93) and worth_seeking(None, 50, -1, 160)  # no index: 3 GOPs guessed


def test_the_keyframe_before_a_timestamp_is_found_in_the_index():
    from collections import namedtuple

    from media.decode import keyframe_before

    Entry = namedtuple("Entry", "timestamp is_keyframe")
    entries = [Entry(t * 10, t % 30 == 0) for t in range(100)]  # keyframes at 0, 300, 600, 900
    assert keyframe_before(entries, 455) == 300 and keyframe_before(entries, 600) == 600
    assert keyframe_before(entries, 99_999) == 900 and keyframe_before(entries, -5) is None
    assert keyframe_before(entries, 590, most=20) is None  # 300 lies 30 entries back
    assert keyframe_before([], 100) is None  # no index


@pytest.mark.parametrize("gop", [7, 30])
def test_seeking_by_the_index_reads_the_exact_frames(tmp_path, gop):
    path = tmp_path / "b.mp4"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.height, stream.width = 48, 64
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0", "preset": "medium", "bf": "3", "g": str(gop), "sc_threshold": "0"}
        for i in range(50):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 5 * i, np.uint8), "rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(str(path)) as container:
        assert sum(e.is_keyframe for e in container.streams.video[0].index_entries) == -(-50 // gop)
    indices = np.array([[2, 15, 16, 22, 29, 30, 35, 43, 44, 49]])
    frames, _, _ = read_frames(path, indices, short_side=48)
    np.testing.assert_array_equal(levels(frames), indices)


def test_decoding_past_its_time_limit_is_a_timeout_error_across_seeks(tmp_path, monkeypatch):
    """One deadline for the whole clip: a seek does not restart the clock."""
    path = numbered_clip(tmp_path / "n.mp4", gop=5)
    clock = iter(range(0, 10_000, 10))  # every reading 10 s after the last
    monkeypatch.setattr(media.decode.time, "monotonic", lambda: next(clock))
    with pytest.raises(VideoError) as err:
        read_frames(path, np.array([[0, 30]]), short_side=48, limits=Limits(decode_timeout_s=25.0))
    assert err.value.code == "timeout" and "25 s" in str(err.value)
    # the same clip within the limit: a frame decoded, then a seek to frame 30, then decoded
    frames, _, _ = read_frames(path, np.array([[0, 30]]), short_side=48, limits=Limits(decode_timeout_s=1e9))
    np.testing.assert_array_equal(levels(frames), [[0, 30]])
