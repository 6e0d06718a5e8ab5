"""What to label: the command's INPUT arguments -> one `Item` (id, path) per video, in order.

An INPUT is a video file, a directory (every video under it, recursively, in name order), a
glob (`archive/**/*.mp4`), or a manifest: `.csv` (a header row) or `.jsonl` (one object a
line) with a `path` or `url` column and an optional `id`. Without an id a video's id is its
path as given (a manifest's relative paths are resolved against the manifest's folder). A
video met twice (a folder and a glob over it) is labelled once; one id given to two different
videos is refused. Nothing is opened here but directories and manifests: a bad video becomes a
row with its status when it is decoded.
"""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# What a directory or a glob's folder is searched for (the containers media.container allows)
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts"})
MANIFEST_SUFFIXES = frozenset({".csv", ".jsonl", ".ndjson"})
URL_SCHEMES = ("http://", "https://")


@dataclass(frozen=True)
class Item:
    id: str
    path: str  # a local path or an http(s) URL


def is_url(path: str) -> bool:
    return path.startswith(URL_SCHEMES)


def _directory(root: Path) -> Iterator[Item]:
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()):
        yield Item(str(path), str(path))


def _manifest_rows(path: Path) -> Iterator[dict]:
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            yield from csv.DictReader(f)
        return
    with path.open(encoding="utf-8-sig") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not a JSON object ({err.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{n}: not a JSON object")
            yield row


def _manifest(path: Path) -> Iterator[Item]:
    """A manifest's rows; ValueError in one line naming the file and row when one has no path."""
    for n, row in enumerate(_manifest_rows(path), 2 if path.suffix.lower() == ".csv" else 1):
        where = row.get("path") or row.get("url")
        if not where:
            raise ValueError(f"{path}: row {n} has no 'path' or 'url' (columns: {', '.join(map(str, row))})")
        where = str(where)
        if not is_url(where) and not Path(where).is_absolute():
            where = str(path.parent / where)
        yield Item(str(row.get("id") or where), where)


def _one(arg: str) -> Iterator[Item]:
    if is_url(arg):
        yield Item(arg, arg)
        return
    path = Path(arg)
    if path.is_dir():
        yield from _directory(path)
    elif path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file():
        yield from _manifest(path)
    elif glob.has_magic(arg) and not path.is_file():  # `clip [1080p].mp4` is a file's name, not a pattern
        matches = sorted(glob.glob(arg, recursive=True))
        if not matches:
            raise ValueError(f"{arg}: the pattern matches nothing")
        for match in matches:
            yield from _directory(Path(match)) if Path(match).is_dir() else [Item(match, match)]
    else:  # a file (a missing one becomes a row with its status, as in `sttm predict`)
        yield Item(arg, arg)


def expand(inputs: Iterable[str]) -> list[Item]:
    """Every video the INPUT arguments name, in order, each id once. ValueError in one line for a
    glob that matches nothing, an unreadable manifest, a directory with no video, or an id given
    to two different videos."""
    seen: dict[str, Item] = {}
    for arg in inputs:
        found = 0
        try:
            for item in _one(arg):
                first = seen.setdefault(item.id, item)
                if first.path != item.path:  # one row would stand for two videos
                    raise ValueError(f"{arg}: id {item.id!r} names two videos: {first.path} and {item.path}")
                found += 1
        except OSError as err:
            raise ValueError(f"{arg}: {err.strerror or err}") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"{arg}: not UTF-8 text (byte {err.object[err.start]:#04x} at {err.start})") from None
        if not found and Path(arg).is_dir():
            raise ValueError(f"{arg}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) under it")
    return list(seen.values())
