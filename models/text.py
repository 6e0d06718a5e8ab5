"""Text files a user writes (a data set's CSV, labels.txt and dataset.json, a labels sidecar, an
MMAction2 config): UTF-8, with or without the BOM that spreadsheets and Windows editors put first."""

from __future__ import annotations

from pathlib import Path

from models.errors import CheckpointError


def read_text(path: str | Path) -> str:
    """The file's text; ValueError in one line naming the file where it is not UTF-8 (OSError as
    it is)."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at {err.start})") from None


def read_labels(path: str | Path) -> tuple[str, ...]:
    """A labels file: one class name a line, in class-index order (blank lines skipped)."""
    try:
        names = tuple(line.strip() for line in read_text(path).splitlines() if line.strip())
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read labels ({err})") from None
    if not names:
        raise CheckpointError(f"{path}: no labels in file")
    return names
