"""Crops and normalisation."""

from __future__ import annotations

import random

import numpy as np

from media.transforms import crop, normalize, random_crop


def test_crop_and_normalize():
    frames = np.zeros((2, 48, 64, 3), np.uint8)
    frames[..., :16, :] = 255
    three = crop(frames, 48, crops=3)
    assert three.shape == (3, 2, 48, 48, 3) and three[0, 0, 0, 0, 0] == 255 and three[2, 0, 0, -1, 0] == 0
    x = normalize(crop(frames, 48)[0], (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (3, 2, 48, 48) and x.dtype == np.float32 and x.max() == 1.0 and x.min() == -1.0


def test_random_crop_stays_inside_and_follows_the_rng():
    frames = np.arange(2 * 40 * 50 * 3, dtype=np.uint8).reshape(2, 40, 50, 3)
    a, b = random_crop(frames, 32, random.Random(3)), random_crop(frames, 32, random.Random(3))
    assert a.shape == (1, 2, 32, 32, 3)
    np.testing.assert_array_equal(a, b)


def test_normalize_is_the_textbook_formula_channels_first():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 4, 8, 10, 3), dtype=np.uint8)  # (views, T, H, W, 3)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = np.moveaxis((frames / 255.0 - np.array(mean)) / np.array(std), -1, -4)  # float64
    x = normalize(frames, mean, std)
    assert x.shape == (2, 3, 4, 8, 10) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(x, expected, rtol=0, atol=2e-6)
