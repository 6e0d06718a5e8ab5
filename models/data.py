"""Video classification data: `path,label` CSV lists or class-per-folder trees of real
video files, decoded with `media.load_clip` (the same code path the server uses)."""

from __future__ import annotations

import csv
import io
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from media import InputSpec, Jitter, VideoError, Views, load_clip
from models.text import read_labels, read_text

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v"}


# Label-aware symmetries a data set may declare in `dataset.json`: the transform, and the
# key naming the label pairs it swaps. A flip leaves unlisted classes as they are; a time
# reversal is applied only to the classes it pairs (an unlisted action may not be
# reversible).
SYMMETRIES = {"hflip": "hflip_swaps", "vflip": "vflip_swaps", "reverse": "time_reversed_pairs"}
AXIS = {"hflip": 3, "vflip": 2, "reverse": 1}  # of a clip (3, T, S, S)
DEFAULT_AUGMENT = ("hflip",)


@dataclass(frozen=True)
class Split:
    items: tuple[tuple[Path, int], ...]
    labels: tuple[str, ...]
    # symmetry (a key of SYMMETRIES) -> the label pairs it swaps; absent: not allowed
    swaps: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


def _read_csv(path: Path, labels: list[str] | None) -> list[tuple[Path, str]]:
    rows = []
    for row in csv.reader(io.StringIO(read_text(path))):
        if not row or row[0].strip().lower() == "path":
            continue
        if len(row) < 2:
            raise ValueError(f"{path}: a row needs 'path,label': {row}")
        label = row[1].strip()
        if labels is not None and label.isdigit() and label not in labels:
            label = labels[int(label)]
        target = Path(row[0].strip())
        rows.append((target if target.is_absolute() else path.parent / target, label))
    return rows


def _read_tree(root: Path) -> list[tuple[Path, str]]:
    return [
        (f, cls.name)
        for cls in sorted(p for p in root.iterdir() if p.is_dir())
        for f in sorted(cls.rglob("*"))
        if f.suffix.lower() in VIDEO_EXTENSIONS
    ]


def _other_splits(data: Path, split: str) -> str:
    """' (clips in: train)': a data set directory's other splits that hold clips."""
    others = [name for name in ("train", "val", "test") if name != split and _holds_clips(data, name)]
    return f" (clips in: {', '.join(others)})" if others else ""


def _holds_clips(data: Path, split: str) -> bool:
    try:
        if (data / f"{split}.csv").is_file():
            return bool(_read_csv(data / f"{split}.csv", None))
        return (data / split).is_dir() and bool(_read_tree(data / split))
    except (ValueError, OSError):  # what that split's own load would report
        return False


def load_split(data: str | Path, split: str, labels: tuple[str, ...] | None = None) -> Split:
    """`data` is a directory with `<split>.csv` (+ optional `labels.txt`, `dataset.json`),
    or with `<split>/<class>/*.mp4`, or a CSV file itself."""
    data = Path(data)
    meta = json.loads(read_text(data / "dataset.json")) if (data / "dataset.json").is_file() else {}
    if labels is None and (data / "labels.txt").is_file():
        labels = read_labels(data / "labels.txt")
    if data.is_file():
        rows = _read_csv(data, list(labels) if labels else None)
    elif (data / f"{split}.csv").is_file():
        rows = _read_csv(data / f"{split}.csv", list(labels) if labels else None)
    elif (data / split).is_dir():
        rows = _read_tree(data / split)
    else:
        raise ValueError(f"{data}: no {split}.csv and no {split}/<class>/ folders")
    if not rows:
        raise ValueError(f"{data}: the {split} split is empty{_other_splits(data, split)}")
    labels = labels or tuple(sorted({label for _, label in rows}))
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted({label for _, label in rows if label not in index})
    if unknown:
        raise ValueError(f"{data}: labels not in the label list: {unknown[:5]}")
    meta = {"hflip_swaps": [] if meta.get("hflip", True) else None, **meta}  # flipping is allowed unless forbidden
    swaps = {name: tuple(map(tuple, meta[key])) for name, key in SYMMETRIES.items() if meta.get(key) is not None}
    return Split(tuple((p, index[label]) for p, label in rows), labels, swaps)


def label_map(split: Split, symmetry: str) -> list[int | None]:
    """For each label, the label of its transformed clip (None: leave such clips alone)."""
    names = {n: i for i, n in enumerate(split.labels)}
    pairs = [(names[a], names[b]) for a, b in split.swaps.get(symmetry, ()) if a in names and b in names]
    target: list[int | None] = [None if symmetry == "reverse" else i for i in range(len(names))]
    for a, b in pairs:
        target[a], target[b] = b, a
    return target


class VideoDataset(torch.utils.data.Dataset):
    """Decodes one clip per item with `media.load_clip`: `[3, T, S, S]` float32, label.
    Test mode takes the server's own view (`Views()`); train mode a random one (`Jitter`:
    temporal jitter, scale jitter, a random crop) and the label-aware symmetries in
    `augment`, each with probability 1/2: a horizontal flip (by default, unless the data set
    forbids it), a vertical flip, a time reversal, each swapping the labels the data set names.

    `augment=None` means the default (`hflip` where allowed); a symmetry named explicitly
    that the data set does not declare is an error, not a silent no-op."""

    def __init__(
        self,
        split: Split,
        spec: InputSpec,
        train: bool,
        on_error: str = "skip",
        augment: tuple[str, ...] | None = None,
    ) -> None:
        self.split, self.spec, self.train, self.on_error = split, spec, train, on_error
        unknown = sorted(set(augment or ()) - set(SYMMETRIES))
        if unknown:
            raise ValueError(f"unknown augmentation {unknown[0]!r}: choose from {', '.join(SYMMETRIES)}")
        missing = [s for s in augment or () if s not in split.swaps]
        if missing:
            raise ValueError(
                f"the data set does not allow {missing[0]!r}: declare {SYMMETRIES[missing[0]]} in its dataset.json"
            )
        chosen = set(augment or DEFAULT_AUGMENT) & set(split.swaps)
        self.maps = {s: label_map(split, s) for s in SYMMETRIES if s in chosen}  # fixed order: hflip, vflip, reverse

    def __len__(self) -> int:
        return len(self.split.items)

    def __getitem__(self, i: int):
        path, label = self.split.items[i]
        rng = random.Random(torch.initial_seed() * 1_000_003 + i)  # reproducible for a seed
        try:
            video = load_clip(path, self.spec, Jitter(rng) if self.train else Views()).tensor[0]  # (3, T, S, S)
        except (VideoError, OSError) as err:
            if self.on_error == "fail":  # raised by `decoded` in the main process, not in a DataLoader worker
                return Unreadable(f"{path}: {err}")
            log.warning("skipping %s: %s", path, err)
            return None
        for symmetry, target in self.maps.items() if self.train else ():
            if rng.random() < 0.5 and target[label] is not None:
                video, label = np.flip(video, AXIS[symmetry]), target[label]
        return torch.from_numpy(np.ascontiguousarray(video)), label


def require_read(read: int, dataset: VideoDataset, split: str) -> None:
    """ValueError where not one clip of a non-empty split decoded (each was logged as skipped):
    training on nothing or scoring nothing would otherwise report 0.0 and exit 0."""
    if read == 0 and len(dataset):
        first = dataset.split.items[0][0]
        raise ValueError(f"no clip of the {split} split could be read ({len(dataset)} listed; the first: {first})")


@dataclass(frozen=True)
class Unreadable:
    """A clip that stops the run (`on_error="fail"`), passed out of a DataLoader worker as data:
    raised there, torch re-raised it with the worker's whole traceback as its message."""

    message: str


def collate(batch):
    """Drops items that failed to decode (reported by the dataset); a batch holding an
    `Unreadable` clip is that clip."""
    if failed := [b for b in batch if isinstance(b, Unreadable)]:
        return failed[0]
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    videos, labels = zip(*batch)
    return torch.stack(videos), torch.tensor(labels)


def decoded(batch):
    """A batch as `collate` made it; ValueError (one line, naming the clip) for an `Unreadable` one."""
    if isinstance(batch, Unreadable):
        raise ValueError(batch.message)
    return batch
