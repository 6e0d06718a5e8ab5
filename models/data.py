"""Video classification data: `path,label` CSV lists or class-per-folder trees of real
video files, decoded with `models.video` (the same code path the server uses)."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.config import Preprocessing
from models.video import VideoError, crop, normalize, read_frames

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v"}


# Label-aware symmetries a data set may declare in `dataset.json`: the transform, and the
# key naming the label pairs it swaps. A flip leaves unlisted classes as they are; a time
# reversal is applied only to the classes it pairs (an unlisted action may not be
# reversible).
SYMMETRIES = {"hflip": "hflip_swaps", "vflip": "vflip_swaps", "reverse": "time_reversed_pairs"}
AXIS = {"hflip": 2, "vflip": 1, "reverse": 0}  # of a clip (T, H, W, 3)
DEFAULT_AUGMENT = ("hflip",)


@dataclass(frozen=True)
class Split:
    items: tuple[tuple[Path, int], ...]
    labels: tuple[str, ...]
    # symmetry (a key of SYMMETRIES) -> the label pairs it swaps; absent: not allowed
    swaps: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)


def _read_csv(path: Path, labels: list[str] | None) -> list[tuple[Path, str]]:
    rows = []
    with open(path, newline="") as f:
        for row in csv.reader(f):
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


def load_split(data: str | Path, split: str, labels: tuple[str, ...] | None = None) -> Split:
    """`data` is a directory with `<split>.csv` (+ optional `labels.txt`, `dataset.json`),
    or with `<split>/<class>/*.mp4`, or a CSV file itself."""
    data = Path(data)
    meta = json.loads((data / "dataset.json").read_text()) if (data / "dataset.json").is_file() else {}
    if labels is None and (data / "labels.txt").is_file():
        labels = tuple(line.strip() for line in (data / "labels.txt").read_text().splitlines() if line.strip())
    if data.is_file():
        rows = _read_csv(data, list(labels) if labels else None)
    elif (data / f"{split}.csv").is_file():
        rows = _read_csv(data / f"{split}.csv", list(labels) if labels else None)
    elif (data / split).is_dir():
        rows = _read_tree(data / split)
    else:
        raise ValueError(f"{data}: no {split}.csv and no {split}/<class>/ folders")
    if not rows:
        raise ValueError(f"{data}: the {split} split is empty")
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
    """Decodes one clip per item: `[3, T, S, S]` float32, label. Train mode adds temporal
    jitter, scale jitter + random crop, and the label-aware symmetries in `augment`, each
    with probability 1/2: a horizontal flip (by default, unless the data set forbids it), a
    vertical flip, a time reversal, each swapping the labels the data set names.

    `augment=None` means the default (`hflip` where allowed); a symmetry named explicitly
    that the data set does not declare is an error, not a silent no-op."""

    def __init__(
        self, split: Split, pre: Preprocessing, frames: int, size: int, train: bool, on_error: str = "skip",
        augment: tuple[str, ...] | None = None,
    ) -> None:  # fmt: skip
        self.split, self.pre, self.frames, self.size, self.train = split, pre, frames, size, train
        self.on_error = on_error
        unknown = sorted(set(augment or ()) - set(SYMMETRIES))
        if unknown:
            raise ValueError(f"unknown augmentation {unknown[0]!r}: choose from {', '.join(SYMMETRIES)}")
        missing = [s for s in augment or () if s not in split.swaps]
        if missing:
            raise ValueError(f"the data set does not allow {missing[0]!r}: declare {SYMMETRIES[missing[0]]} "
                             "in its dataset.json")  # fmt: skip
        chosen = set(augment or DEFAULT_AUGMENT) & set(split.swaps)
        self.maps = {s: label_map(split, s) for s in SYMMETRIES if s in chosen}  # fixed order: hflip, vflip, reverse

    def __len__(self) -> int:
        return len(self.split.items)

    def _indices(self, rng: random.Random):
        if not self.train:
            return None  # the server's own test-mode sampling
        return lambda info: self._train_indices(info.frames, rng)[None]  # (1 clip, T)

    def _train_indices(self, total: int, rng: random.Random) -> np.ndarray:
        if self.pre.sampling == "uniform":  # a random frame inside each segment
            seg = total / self.frames
            idx = np.floor((np.arange(self.frames) + [rng.random() for _ in range(self.frames)]) * seg)
            return np.clip(idx.astype(int), 0, total - 1)
        span = self.frames * self.pre.frame_interval
        start = rng.randint(0, max(0, total - span))
        return np.minimum(start + np.arange(self.frames) * self.pre.frame_interval, total - 1)

    def __getitem__(self, i: int):
        path, label = self.split.items[i]
        rng = random.Random(torch.initial_seed() * 1_000_003 + i)  # reproducible for a seed
        try:
            short = self.pre.short_side if not self.train else int(self.pre.short_side * rng.uniform(1.0, 1.25))
            frames, _, _ = read_frames(
                path, self._indices(rng), short, clip_len=self.frames, sampling=self.pre.sampling,
                frame_interval=self.pre.frame_interval,
            )  # fmt: skip
        except (VideoError, OSError) as err:
            if self.on_error == "fail":
                raise ValueError(f"{path}: {err}") from err
            print(f"warning: skipping {path}: {err}", flush=True)
            return None
        frames = frames[0]  # (T, H, W, 3): one clip
        if self.train:
            H, W = frames.shape[1:3]
            y, x = rng.randint(0, H - self.size), rng.randint(0, W - self.size)
            frames = frames[:, y : y + self.size, x : x + self.size]
            for symmetry, target in self.maps.items():
                if rng.random() < 0.5 and target[label] is not None:
                    frames, label = np.flip(frames, AXIS[symmetry]), target[label]
        else:
            frames = crop(frames, self.size)[0]
        return torch.from_numpy(normalize(frames, self.pre.mean, self.pre.std)), label


def collate(batch):
    """Drops items that failed to decode (reported by the dataset)."""
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    videos, labels = zip(*batch)
    return torch.stack(videos), torch.tensor(labels)
