"""Video classification data: `path,label` CSV lists or class-per-folder trees of real
video files, decoded with `models.video` (the same code path the server uses)."""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.config import Preprocessing
from models.video import VideoError, crop, normalize, read_frames

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v"}


@dataclass(frozen=True)
class Split:
    items: tuple[tuple[Path, int], ...]
    labels: tuple[str, ...]
    hflip_swaps: tuple[tuple[str, str], ...] | None = None  # None: flip not allowed


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
    swaps = meta.get("hflip_swaps")
    return Split(
        tuple((p, index[label]) for p, label in rows),
        labels,
        tuple(map(tuple, swaps)) if swaps is not None else (() if meta.get("hflip", True) else None),
    )


class VideoDataset(torch.utils.data.Dataset):
    """Decodes one clip per item: `[3, T, S, S]` float32, label. Train mode adds temporal
    jitter, scale jitter + random crop, and a horizontal flip that swaps the labels the
    data set names (or no flip at all when the data set forbids it)."""

    def __init__(
        self, split: Split, pre: Preprocessing, frames: int, size: int, train: bool, on_error: str = "skip"
    ) -> None:
        self.split, self.pre, self.frames, self.size, self.train = split, pre, frames, size, train
        self.on_error = on_error
        names = {n: i for i, n in enumerate(split.labels)}
        self.flip_to = list(range(len(split.labels)))
        for a, b in split.hflip_swaps or ():
            if a in names and b in names:
                self.flip_to[names[a]], self.flip_to[names[b]] = names[b], names[a]

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
            if self.split.hflip_swaps is not None and rng.random() < 0.5:
                frames, label = frames[:, :, ::-1], self.flip_to[label]
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
