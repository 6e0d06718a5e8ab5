"""Top-1 / top-5 / per-class accuracy and the confusion matrix of labelled clips: one tally for
training's validation (`models.train`) and `sttm eval` (`export.evaluate`). Plain numpy."""

from __future__ import annotations

import numpy as np


class Tally:
    """Add `[n, classes]` logits with their `[n]` true labels batch by batch; read the scores."""

    def __init__(self, labels: tuple[str, ...] | list[str]) -> None:
        self.labels = tuple(labels)
        n = len(self.labels)
        self.correct1 = self.correct5 = self.total = 0
        self.per_class = np.zeros((n, 2))  # (correct, seen)
        self.confusion = np.zeros((n, n), dtype=int)  # (true, predicted)

    def add(self, logits: np.ndarray, targets: np.ndarray) -> None:
        logits, targets = np.asarray(logits), np.asarray(targets)
        top = np.argsort(-logits, -1, kind="stable")[:, : min(5, len(self.labels))]
        hit1 = top[:, 0] == targets
        self.correct1 += int(hit1.sum())
        self.correct5 += int((top == targets[:, None]).any(-1).sum())
        self.total += len(targets)
        np.add.at(self.per_class, (targets, 1), 1)
        np.add.at(self.per_class, (targets[hit1], 0), 1)
        np.add.at(self.confusion, (targets, top[:, 0]), 1)

    def scores(self) -> dict:
        """`top1`, `top5`, `clips`, and `per_class`: the top-1 accuracy of every label seen."""
        seen = self.per_class[:, 1]
        return {
            "top1": self.correct1 / max(self.total, 1),
            "top5": self.correct5 / max(self.total, 1),
            "clips": self.total,
            "per_class": {self.labels[i]: float(self.per_class[i, 0] / seen[i]) for i in range(len(seen)) if seen[i]},
        }
