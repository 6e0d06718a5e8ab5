"""The progress line (done of total, rate, ETA, errors) and the summary (files/s, errors by code)."""

from __future__ import annotations

import io

from label.progress import Progress, duration


def test_durations_read_like_a_clock():
    assert [duration(s) for s in (4.2, 65, 3725)] == ["4s", "1m05s", "1h02m05s"]


def test_the_line_counts_rate_eta_and_errors_and_the_summary_groups_errors_by_code():
    out = io.StringIO()
    progress = Progress(10, skipped=2, stream=out, every_s=0)
    progress.update(["ok", "ok", "corrupt", "ok", "not_a_video"])
    progress.update(["ok", "corrupt"])
    line = out.getvalue().splitlines()[-1]
    assert line.startswith("7/10 files (70%)") and "files/s" in line and "ETA " in line and "errors 3" in line
    assert "?" not in line  # an ETA once something is done
    progress.finish()
    summary = out.getvalue().splitlines()[-1]
    assert summary.startswith("labelled 7 files in ") and "2 already done" in summary
    assert summary.endswith("errors: corrupt 2, not_a_video 1") and "after the first answer at" in summary
    one = Progress(1, stream=io.StringIO())
    one.update(["ok"])
    assert one.summary().startswith("labelled 1 file in ")  # was "1 files"
