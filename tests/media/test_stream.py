"""Continuous video (media.stream): windows from one decoding pass, the same frames a clip of
the window's span gets, the last partial window, memory of one window, the client pipe."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from media import InputSpec, Limits, VideoError, Views, load_clip
from media.stream import FrameRing, Pipe, Progress, open_url, read_windows
from tests.media.clips import levels, numbered_clip

SPEC = InputSpec(frames=4, size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), short_side=48, sampling="uniform")


def _pixels(tensor: np.ndarray) -> np.ndarray:
    """A normalised `[1, 3, T, S, S]` clip back to uint8 `[T, S, S, 3]`."""
    return np.moveaxis(tensor[0] * 0.25 + 0.5, 0, -1) * 255


def test_each_window_is_the_clip_load_clip_samples_from_its_span(tmp_path):
    path = numbered_clip(tmp_path / "n.mp4", frames=51)  # 5.1 s at 10 fps
    progress = Progress()
    windows = list(read_windows(path, SPEC, window_s=2.0, stride_s=2.0, progress=progress))
    assert [(w.start_s, w.end_s) for w in windows] == [(0, 2), (2, 4), (4, pytest.approx(5.1))]  # end covered
    assert progress.frames == 51 and not progress.live
    for w in windows:
        same = load_clip(path, SPEC, Views(start_s=w.start_s, end_s=w.end_s))
        np.testing.assert_array_equal(levels(_pixels(w.tensor)), levels(same.pixels[0]))
    assert levels(_pixels(windows[-1].tensor)).tolist() == [41, 44, 46, 49]  # the partial one: frames 40-50


def test_overlapping_windows_and_dense_sampling_pad_like_the_sampler(tmp_path):
    path = numbered_clip(tmp_path / "n.mp4", frames=30)
    dense = InputSpec(**{**SPEC.__dict__, "sampling": "dense", "frame_interval": 4})
    windows = list(read_windows(path, dense, window_s=1.0, stride_s=0.5))
    assert [w.start_s for w in windows] == [0, 0.5, 1.0, 1.5, 2.0]
    assert levels(_pixels(windows[-1].tensor)).tolist() == [20, 24, 28, 29]  # past the end: the last frame repeats


def test_frames_over_the_rate_limit_are_thinned_out(tmp_path):
    path = numbered_clip(tmp_path / "n.mp4", frames=40)  # 10 fps
    progress = Progress()
    windows = list(read_windows(path, SPEC, window_s=2.0, stride_s=2.0, progress=progress, max_fps=5))
    assert progress.frames == 20 and len(windows) == 2
    assert (levels(_pixels(windows[0].tensor)) % 2 == 0).all()  # every other frame


def test_the_ring_holds_one_window_whatever_the_length():
    ring = FrameRing(SPEC, window_s=2.0, stride_s=1.0, max_fps=30)
    frame = np.zeros((32, 32, 3), np.uint8)
    most = 0
    for i in range(3000):  # 100 s at 30 fps
        list(ring.push(i / 30, frame))
        most = max(most, len(ring.frames))
    assert most <= 2 * 30 + 2 and ring.next == 98


def test_pipe_feeds_the_decoder_and_times_out_when_the_client_stalls(tmp_path):
    data = numbered_clip(tmp_path / "n.mkv", frames=20).read_bytes()
    pipe = Pipe(capacity=4096, timeout_s=2.0)

    def feed():
        for i in range(0, len(data), 1000):
            pipe.write(data[i : i + 1000])  # waits while the pipe holds 4 KB
        pipe.close()

    threading.Thread(target=feed, daemon=True).start()
    progress = Progress()
    windows = list(read_windows(pipe, SPEC, window_s=1.0, stride_s=1.0, progress=progress))
    assert len(windows) == 2 and progress.live and progress.frames == 20
    stalled = Pipe(timeout_s=0.3)
    stalled.write(data[:2000])  # a header, then nothing
    started = time.monotonic()
    with pytest.raises(VideoError) as err:
        list(read_windows(stalled, SPEC, 1.0, 1.0, timeout_s=0.3))
    # one stall, not one per read FFmpeg retries (a 10 s stall limit ended a push after 20 s)
    assert err.value.code == "timeout" and time.monotonic() - started < 1.0, err.value


@pytest.mark.parametrize("url", ["file:///etc/passwd", "concat:a|b", "ftp://127.0.0.1/x", "pipe:0"])
def test_only_stream_protocols_are_opened(url):
    with pytest.raises(VideoError) as err:
        open_url(url, 1.0, Limits())
    assert err.value.code == "bad_url"


def test_ffmpeg_opens_no_http_url_itself(tmp_path):
    """HTTP(S) (files, HLS playlists) is fetched by the caller, each URL checked; FFmpeg is
    never handed one, so its HLS demuxer cannot follow a playlist's URLs: zero requests."""
    import functools
    import http.server

    numbered_clip(tmp_path / "n.mp4")
    hits = []

    class Counting(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            hits.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Counting, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for scheme in ("http", "https"):
            with pytest.raises(VideoError) as err:
                open_url(f"{scheme}://127.0.0.1:{server.server_port}/n.mp4", 5.0, Limits())
            assert err.value.code == "bad_url" and "Pipe" in str(err.value)
        assert hits == []
    finally:
        server.shutdown()
