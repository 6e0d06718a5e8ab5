"""The one top-1 / top-5 tally of training and `sttm eval`."""

from __future__ import annotations

import numpy as np

from models.scoring import Tally


def test_top1_top5_per_class_and_confusion():
    tally = Tally(["a", "b", "c", "d", "e", "f"])
    logits = np.array([[9, 1, 0, 0, 0, 0], [9, 8, 0, 0, 0, 0], [1, -5, 2, 3, 4, 9]], float)
    tally.add(logits, np.array([0, 1, 1]))  # right; second best; not in the top 5
    scores = tally.scores()
    assert (scores["top1"], scores["top5"], scores["clips"]) == (1 / 3, 2 / 3, 3)
    assert scores["per_class"] == {"a": 1.0, "b": 0.0}
    assert tally.confusion[1].tolist() == [1, 0, 0, 0, 0, 1]
    assert Tally(["a"]).scores() == {"top1": 0.0, "top5": 0.0, "clips": 0, "per_class": {}}
