"""Logits -> answers: softmax, views averaged after softmax (MMAction2), top-k. Pure NumPy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    index: int


def softmax(logits: np.ndarray) -> np.ndarray:
    """`[..., classes]` -> probabilities over the last axis (stable for large logits)."""
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def average_views(logits: np.ndarray) -> np.ndarray:
    """`[views, classes]` logits of one clip -> `[classes]` probabilities, the mean of each
    view's softmax."""
    return softmax(logits).mean(0)


def top_k(probs: np.ndarray, labels: tuple[str, ...], k: int) -> list[Prediction]:
    """The `k` best of `[classes]` probabilities, best first (ties: the lower index)."""
    if k < 1:  # a slice would quietly answer nothing (0) or all but the last -k (negative)
        raise ValueError(f"top_k must be at least 1, not {k}")
    order = np.argsort(-probs, kind="stable")[: min(k, len(labels))]
    return [Prediction(labels[i], float(probs[i]), int(i)) for i in order]
