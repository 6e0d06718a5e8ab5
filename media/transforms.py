"""Decoded frames -> the model's input: crops and normalisation (pure NumPy)."""

from __future__ import annotations

import random

import numpy as np


def crop(frames: np.ndarray, size: int, crops: int = 1) -> np.ndarray:
    """Centre crop (crops=1) or ThreeCrop along the long side (crops=3):
    `[..., H, W, 3] -> [crops, ..., size, size, 3]`."""
    H, W = frames.shape[-3:-1]
    if crops == 1:
        offsets = [((H - size) // 2, (W - size) // 2)]
    elif crops == 3:
        if W >= H:
            offsets = [((H - size) // 2, x) for x in (0, (W - size) // 2, W - size)]
        else:
            offsets = [(y, (W - size) // 2) for y in (0, (H - size) // 2, H - size)]
    else:
        raise ValueError("crops must be 1 or 3")
    return np.stack([frames[..., y : y + size, x : x + size, :] for y, x in offsets])


def random_crop(frames: np.ndarray, size: int, rng: random.Random) -> np.ndarray:
    """One crop at a random place: `[..., H, W, 3] -> [1, ..., size, size, 3]`."""
    H, W = frames.shape[-3:-1]
    y, x = rng.randint(0, H - size), rng.randint(0, W - size)
    return frames[None, ..., y : y + size, x : x + size, :]


def normalize(frames: np.ndarray, mean, std) -> np.ndarray:
    """uint8 `[..., T, H, W, 3]` -> float32 `[..., 3, T, H, W]` normalised."""
    x = frames.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -4))  # (..., 3, T, H, W)
