"""The segment smoothing rule (runtime.segments) and the text formats of a timeline."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.segments import Segment, TimelineLimits, outside, segments
from service.timeline_formats import csv_text, negotiate, vtt

LABELS = ("right", "left", "up")


def _windows(tops, window_s=2.0, stride_s=1.0, score=0.9):
    """One window per entry: `tops[i]` the top class (None: all classes equal, no action)."""
    out = []
    for i, top in enumerate(tops):
        probs = np.full(len(LABELS), 1 / len(LABELS))
        if top is not None:
            probs = np.full(len(LABELS), (1 - score) / (len(LABELS) - 1))
            probs[top] = score
        out.append((i * stride_s, i * stride_s + window_s, probs))
    return out


def test_two_actions_with_a_blip_make_two_segments():
    segs = segments(_windows([0, 0, 0, 2, 0, 1, 1, 1]), LABELS, min_windows=2)
    assert [s.label for s in segs] == ["right", "left"]
    right, left = segs
    assert right.start_s == 0 and left.end_s == 9  # the first window's start, the last window's end
    assert right.end_s == left.start_s == 5.5  # midway between the centres of windows 4 (5 s) and 5 (6 s)
    assert right.score == pytest.approx(np.mean([0.9, 0.9, 0.9, 0.05, 0.9]))  # the absorbed blip counts in the mean


def test_no_action_windows_are_gaps_and_min_score_decides():
    segs = segments(_windows([0, 0, None, None, 1, 1], stride_s=2.0), LABELS, min_score=0.5)
    assert [(s.label, s.start_s, s.end_s) for s in segs] == [("right", 0.0, 4.0), ("left", 8.0, 12.0)]
    assert segments(_windows([0, 0], score=0.4), LABELS, min_score=0.5) == []


def test_the_end_cuts_the_hysteresis_short():
    # the 5.28 s clip at window_s=2, stride_s=2: 0-2 right, 2-4 a blip, 4-5.28 left
    windows = _windows([0, 2, 1], stride_s=2.0)
    segs = segments(windows, LABELS, min_windows=2)
    assert [(s.label, s.start_s, s.end_s) for s in segs] == [("right", 0.0, 4.0), ("left", 4.0, 6.0)]


def test_one_window_is_one_segment_and_min_windows_one_follows_every_change():
    assert segments(_windows([1]), LABELS) == [Segment("left", 0.0, 2.0, 0.9)]
    assert [s.label for s in segments(_windows([0, 1, 0]), LABELS, min_windows=1)] == ["right", "left", "right"]


@settings(max_examples=200, deadline=None)
@given(
    tops=st.lists(st.sampled_from([0, 1, 2, None]), min_size=1, max_size=40),
    stride=st.sampled_from([0.5, 1.0, 2.0]),
    min_windows=st.integers(1, 4),
)
def test_segments_are_ordered_disjoint_inside_the_video_and_scored(tops, stride, min_windows):
    windows = _windows(tops, 2.0, stride)
    segs = segments(windows, LABELS, min_score=0.5, min_windows=min_windows)
    end = windows[-1][1]
    for s in segs:
        assert 0 <= s.start_s < s.end_s <= end and 0 <= s.score <= 1 and s.label in LABELS
    for a, b in zip(segs, segs[1:]):
        assert a.end_s <= b.start_s  # in order, never overlapping
        assert a.label != b.label or a.end_s < b.start_s  # the same label twice only across a gap
    if all(t == tops[0] for t in tops) and tops[0] is not None:
        assert [(s.label, s.start_s, s.end_s) for s in segs] == [(LABELS[tops[0]], 0.0, end)]
        assert segs[0].score == pytest.approx(0.9)
    # every label change but one cut short by the end held for min_windows windows
    assert len(segs) <= (len(windows) - 1) // min_windows + 2


def test_vtt_and_csv():
    segs = [Segment("moving_right", 0.0, 2.5, 0.876), Segment("moving_left", 2.5, 3725.25, 0.5)]
    text = vtt(segs)
    assert text.startswith("WEBVTT\n\n")
    assert "00:00:00.000 --> 00:00:02.500\nmoving_right 0.88\n" in text
    assert "00:00:02.500 --> 01:02:05.250\nmoving_left 0.50\n" in text
    assert csv_text(segs).splitlines() == ["label,start_s,end_s,score", "moving_right,0.000,2.500,0.8760",
                                           "moving_left,2.500,3725.250,0.5000"]  # fmt: skip
    # a label is cue text: '<' would open a tag, '-->' may not appear, a blank line would end the cue
    odd = vtt([Segment("rock & roll <live> -->\n\nencore", 0.0, 1.0, 0.5)])
    assert odd.endswith("00:00:00.000 --> 00:00:01.000\nrock &amp; roll &lt;live&gt; --&gt;  encore 0.50\n")
    assert negotiate(None, "text/vtt") == "vtt" and negotiate(None, "text/html, text/csv;q=0.9") == "csv"
    assert negotiate("json", "text/vtt") == "json" and negotiate(None, None) == "json"
    # the highest quality, not the first; q=0 refuses a type (these were csv, csv, json)
    assert negotiate(None, "text/csv;q=0, application/json") == "json"
    assert negotiate(None, "text/csv;q=0.1, text/vtt") == "vtt"
    assert negotiate(None, "application/json;q=0.1, text/vtt; Q=0.9") == "vtt"
    assert negotiate(None, "text/csv;q=0") == "json" and negotiate(None, "text/csv;q=x, text/vtt") == "csv"


def test_a_value_outside_the_limits_is_named_in_pydantics_words():
    """What `sttm label` says of its flags, where there is no pydantic model to say it."""
    assert outside(2.0, TimelineLimits.WINDOW_S) is None and outside(600, TimelineLimits.WINDOW_S) is None
    assert outside(0, TimelineLimits.WINDOW_S) == "input should be greater than 0"
    assert outside(0.001, TimelineLimits.STRIDE_S) == "input should be greater than or equal to 0.01"
    assert outside(1.01, TimelineLimits.MIN_SCORE) == "input should be less than or equal to 1"
    assert outside(float("inf"), TimelineLimits.WINDOW_S) == "input should be a finite number"
