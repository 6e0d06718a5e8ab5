"""`sttm synth`: a motion data set where temporal order decides the label (as in SSv2).

Six motions, each with its time-reversed twin, so a model that ignores frame order cannot
beat chance on any pair: a clip of the second class is a clip of the first played
backwards. Shape, colour, size, speed, start, background (flat, gradient, texture,
static distractors), camera jitter and noise are random; everything is deterministic
for a seed. Clips are real H.264 `.mp4` files written with PyAV. NumPy + PyAV only.
"""

from __future__ import annotations

import csv
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

# (forward class, its time reversal)
PAIRS = [
    ("moving_right", "moving_left"),
    ("moving_down", "moving_up"),
    ("rotating_counterclockwise", "rotating_clockwise"),
    ("growing", "shrinking"),
    ("approaching", "separating"),
    ("appearing", "disappearing"),
]
CLASSES = [name for pair in PAIRS for name in pair]
# A horizontal / vertical flip turns these into each other; the rest are flip-invariant
# (the generator's random axes, angles and backgrounds are symmetric under both flips).
HFLIP_SWAPS = [("moving_right", "moving_left"), ("rotating_counterclockwise", "rotating_clockwise")]
VFLIP_SWAPS = [("moving_down", "moving_up"), ("rotating_counterclockwise", "rotating_clockwise")]
SHAPES = ("square", "triangle", "ell", "ellipse", "disc")
SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}
FPS = 15


@dataclass(frozen=True)
class SynthConfig:
    size: int = 128
    frames: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        """ValueError (one line) for clips that cannot be made: H.264 in 4:2:0 takes even sides
        (an odd size failed in libx264 with a traceback), a motion needs two frames (one divided
        by zero); under 16 pixels the shapes would be a pixel or two."""
        if self.size < 16 or self.size % 2:
            raise ValueError(f"--size must be even and at least 16, not {self.size}")
        if self.frames < 2:
            raise ValueError(f"--frames must be at least 2, not {self.frames}")


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Inside-test in the object's own (rotated) coordinates."""
    if kind == "square":
        return (np.abs(u) <= r) & (np.abs(v) <= r)
    if kind == "triangle":
        return (v >= -r) & (v <= r) & (np.abs(u) <= (v + r) / 2)
    if kind == "ell":  # an L: a square minus one quadrant
        return (np.abs(u) <= r) & (np.abs(v) <= r) & ~((u > 0) & (v < 0))
    if kind == "ellipse":
        return (u / r) ** 2 + (v / (0.45 * r)) ** 2 <= 1
    return u**2 + v**2 <= r**2  # disc


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Random colours on a coarse grid, bilinearly interpolated: `[size, size, 3]`."""
    coarse = rng.uniform(0, 1, (cells + 1, cells + 1, 3))
    grid = np.linspace(0, cells, size)
    rows = np.stack(
        [
            np.stack([np.interp(grid, np.arange(cells + 1), coarse[:, j, c]) for c in range(3)], -1)
            for j in range(cells + 1)
        ],
        1,
    )  # (size, cells+1, 3)
    return np.stack(
        [np.stack([np.interp(grid, np.arange(cells + 1), rows[i, :, c]) for c in range(3)], -1) for i in range(size)]
    )  # (size, size, 3)


def _background(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    kind = rng.integers(4)
    base = rng.uniform(0, 1, 3)
    if kind == 0:  # flat
        bg = np.broadcast_to(base, (size, size, 3)).copy()
    elif kind == 1:  # gradient
        other, angle = rng.uniform(0, 1, 3), rng.uniform(0, 2 * np.pi)
        g = (np.cos(angle) * xx + np.sin(angle) * yy + 1.5) / 3  # (size, size) in ~[0, 1]
        bg = base * (1 - g[..., None]) + other * g[..., None]
    else:  # texture: smooth (bilinear) noise, not blocks that look like objects; kind 3 adds distractors
        bg = _smooth_noise(rng, size, cells=size // 16) * 0.35 + base * 0.65
    if kind == 3:
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.uniform(-0.8, 0.8, 2).tolist() + [rng.uniform(0.05, 0.12)]
            mask = _shape_mask(SHAPES[rng.integers(len(SHAPES))], xx - cx, yy - cy, r)
            bg[mask] = rng.uniform(0, 1, 3)
    return bg


def render_clip(motion: int, reverse: bool, cfg: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """One clip `[frames, size, size, 3]` uint8 of motion pair `motion` (reversed or not)."""
    S, T = cfg.size, cfg.frames
    margin = 0.1 * S
    canvas = S + int(2 * margin)  # camera jitter crops a moving window out of a larger canvas
    coords = np.linspace(-1 - 2 * margin / S, 1 + 2 * margin / S, canvas)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # (canvas, canvas) in object units
    bg = _background(rng, canvas, yy, xx)
    colour = rng.uniform(0, 1, 3)
    while np.abs(colour - bg.mean((0, 1))).sum() < 0.6:  # keep the object visible
        colour = rng.uniform(0, 1, 3)
    kind = SHAPES[rng.integers(len(SHAPES))] if motion != 2 else SHAPES[rng.integers(4)]  # discs don't show rotation
    r = rng.uniform(0.15, 0.25)
    speed = rng.uniform(0.9, 1.4)  # distance covered over the clip (object units; the frame is 2 wide)
    centre = rng.uniform(-0.25, 0.25, 2)  # (y, x)
    angle0 = rng.uniform(0, 2 * np.pi)
    axis = rng.uniform(0, np.pi)
    jitter = np.cumsum(rng.normal(0, 0.6, (T, 2)), 0).clip(-int(margin), int(margin)).round().astype(int)
    frames = []
    for t in range(T):
        p = t / (T - 1)
        objects = []  # (cy, cx, radius, angle, alpha)
        if motion == 0:
            objects.append((centre[0], -speed / 2 + speed * p, r, angle0, 1.0))
        elif motion == 1:
            objects.append((-speed / 2 + speed * p, centre[1], r, angle0, 1.0))
        elif motion == 2:
            objects.append((*centre, r * 1.3, angle0 + speed * np.pi * p, 1.0))
        elif motion == 3:
            objects.append((*centre, r * (0.5 + 1.0 * p), angle0, 1.0))
        elif motion == 4:
            d = (0.9 - 0.6 * p) * speed  # half distance shrinks: approaching
            dy, dx = np.sin(axis) * d, np.cos(axis) * d
            objects += [
                (centre[0] + dy, centre[1] + dx, r * 0.8, angle0, 1.0),
                (centre[0] - dy, centre[1] - dx, r * 0.8, -angle0, 1.0),
            ]
        else:
            alpha = float(np.clip((p - 0.25) / 0.5, 0, 1))
            objects.append((*centre, r, angle0, alpha))
        frame = bg.copy()
        for cy, cx, rad, angle, alpha in objects:
            u = np.cos(angle) * (xx - cx) + np.sin(angle) * (yy - cy)
            v = -np.sin(angle) * (xx - cx) + np.cos(angle) * (yy - cy)
            mask = _shape_mask(kind, u, v, rad)
            frame[mask] = (1 - alpha) * frame[mask] + alpha * colour
        y0, x0 = int(margin) + jitter[t]
        frame = frame[y0 : y0 + S, x0 : x0 + S]
        frame = frame + rng.normal(0, rng.uniform(0, 0.04), frame.shape)
        frames.append((frame.clip(0, 1) * 255).astype(np.uint8))
    clip = np.stack(frames)  # (T, S, S, 3)
    return clip[::-1] if reverse else clip


def write_mp4(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """H.264 (yuv420p) via PyAV."""
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for array in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _make(job: tuple[Path, int, int, SynthConfig]) -> None:
    path, index, label, cfg = job
    rng = np.random.default_rng([cfg.seed, index])
    motion, reverse = divmod(label, 2)
    write_mp4(path, render_clip(motion, bool(reverse), cfg, rng))


def generate(out: str | Path, clips_per_class: int, cfg: SynthConfig = SynthConfig(), workers: int = 2) -> dict:
    """Write clips + `train.csv`/`val.csv`/`test.csv` (`path,label`) + `labels.txt` +
    `dataset.json`. Returns the split sizes."""
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    jobs, rows = [], {split: [] for split in SPLITS}
    held_out = [max(1, round(SPLITS[s] * clips_per_class)) if clips_per_class >= 3 else 0 for s in ("val", "test")]
    bounds = np.cumsum([0, clips_per_class - sum(held_out), *held_out])  # train, val, test boundaries
    for label, name in enumerate(CLASSES):
        for i in range(clips_per_class):
            index = label * clips_per_class + i
            path = out / "videos" / f"{name}_{i:05d}.mp4"
            jobs.append((path, index, label, cfg))
            split = list(SPLITS)[int(np.searchsorted(bounds, i, side="right")) - 1]
            rows[split].append((f"videos/{path.name}", name))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_make, jobs, chunksize=8))
    for split, items in rows.items():
        with open(out / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows(items)
    (out / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    meta = {
        "name": "sttm-synth-motion",
        "seed": cfg.seed,
        "size": cfg.size,
        "frames": cfg.frames,
        "fps": FPS,
        "hflip_swaps": HFLIP_SWAPS,
        "vflip_swaps": VFLIP_SWAPS,
        "time_reversed_pairs": PAIRS,
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")
    return {split: len(items) for split, items in rows.items()}
