"""Sampling plans: which frames make a clip, in test mode, per window, and in training."""

from __future__ import annotations

import random

import numpy as np
import pytest

from media import VideoError, VideoInfo
from media.sampling import clip_plan, dense_indices, frame_range, jitter_plan, uniform_indices, window_starts

INFO = VideoInfo(duration_s=10.0, fps=10.0, width=64, height=48, codec="h264", frames=100)


def test_dense_and_uniform_sampling():
    np.testing.assert_array_equal(dense_indices(100, 4, 2), [[46, 48, 50, 52]])  # one clip, centred
    clips = dense_indices(100, 4, 2, num_clips=3)
    assert clips[0, 0] == 0 and clips[-1, -1] == 98 and clips.shape == (3, 4)  # last clip ends the video
    np.testing.assert_array_equal(dense_indices(5, 4, 2), [[0, 2, 4, 4]])  # short: repeat the last
    np.testing.assert_array_equal(uniform_indices(32, 4), [[4, 12, 20, 28]])  # segment centres
    assert uniform_indices(3, 8).max() == 2


def test_a_plan_keeps_inside_its_time_window():
    idx = clip_plan(4, "uniform", 4, start_s=1.0, end_s=2.0)(INFO)
    assert idx.shape == (1, 4) and idx.min() >= 10 and idx.max() < 20
    assert frame_range(INFO, 9.0, 50.0) == (90, 100)  # an end past the end: the end
    for start in (10.0, 50.0, float("inf")):  # answered as the last frame repeated, 200
        with pytest.raises(VideoError, match=f"start {start:g} s is not before the end of the video \\(10.00 s\\)"):
            clip_plan(4, "dense", 2, start_s=start)(INFO)


def test_timeline_windows_are_counted_before_they_are_listed():
    assert window_starts(10.0, 2, 0.3, 120).tolist() == pytest.approx(np.arange(0.0, 8.1 + 1e-6, 0.3).tolist())
    assert window_starts(5.28, 2, 2, 120).tolist() == [0, 2, 4]  # the last, partial window covers 4-5.28
    assert window_starts(6.0, 2, 2, 120).tolist() == [0, 2, 4]
    with pytest.raises(VideoError, match="inf windows"):
        window_starts(10.0, 2.0, 5e-324, 120)  # past the HTTP schema's bound


def test_training_jitter_is_random_but_reproducible():
    draw = lambda seed, sampling: jitter_plan(8, sampling, 4, random.Random(seed))(INFO)  # noqa: E731
    for sampling in ("dense", "uniform"):
        assert draw(1, sampling).shape == (1, 8) and (np.diff(draw(1, sampling)) > 0).all()
        np.testing.assert_array_equal(draw(1, sampling), draw(1, sampling))
        assert any((draw(1, sampling) != draw(s, sampling)).any() for s in range(2, 6))
