"""A timeline's segments as text: WebVTT (one cue per segment, for a `<track>` in a video
player) and CSV. Pure functions over the response's segments."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence

MEDIA_TYPES = {"json": "application/json", "vtt": "text/vtt", "csv": "text/csv"}


def _quality(params: list[str]) -> float:
    """An `Accept` item's `q` (1 when absent or unreadable, as if it had none)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 1.0
    return 1.0


def negotiate(fmt: str | None, accept: str | None) -> str:
    """`format=` wins; else the type of `Accept` we write that it rates highest (the first of equals;
    `q=0` is "not this one", RFC 9110); else JSON. Order alone chose: `text/csv;q=0, application/json`
    was answered in CSV."""
    if fmt:
        return fmt
    offers = []
    for i, part in enumerate((accept or "").split(",")):
        kind, *params = part.split(";")
        name = next((n for n, media_type in MEDIA_TYPES.items() if media_type == kind.strip().lower()), None)
        quality = _quality(params)
        if name is not None and quality > 0:  # NaN too is no preference
            offers.append((-quality, i, name))
    return min(offers)[2] if offers else "json"


def _timestamp(seconds: float) -> str:
    ms = round(max(seconds, 0.0) * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def _cue_text(label: str) -> str:
    """A label as WebVTT cue text: `&`, `<`, `>` as character references (a `<` opens a tag, and
    `-->` may not appear), line breaks as spaces (a blank line would end the cue)."""
    return html.escape(" ".join(label.splitlines()), quote=False)


def vtt(segments: Sequence) -> str:
    """WebVTT: a cue `start --> end` per segment, the text `<label> <score, 2 decimals>`."""
    cues = [
        f"{i}\n{_timestamp(s.start_s)} --> {_timestamp(s.end_s)}\n{_cue_text(s.label)} {s.score:.2f}\n"
        for i, s in enumerate(segments, 1)
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def csv_text(segments: Sequence) -> str:
    """CSV with a header: `label,start_s,end_s,score`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["label", "start_s", "end_s", "score"])
    for s in segments:
        writer.writerow([s.label, f"{s.start_s:.3f}", f"{s.end_s:.3f}", f"{s.score:.4f}"])
    return out.getvalue()


def render(fmt: str, segments: Sequence) -> str:
    """`vtt` or `csv` text of the segments."""
    return vtt(segments) if fmt == "vtt" else csv_text(segments)
