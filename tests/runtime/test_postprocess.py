"""Softmax, view averaging and top-k: the math every runtime's answer goes through."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.postprocess import top_k

LABELS = ("a", "b", "c", "d")


def test_top_k_is_best_first_ties_to_the_lower_index_and_capped_at_the_labels():
    probs = np.array([0.1, 0.4, 0.1, 0.4])
    assert [(p.label, p.index) for p in top_k(probs, LABELS, 3)] == [("b", 1), ("d", 3), ("a", 0)]
    assert [p.index for p in top_k(probs, LABELS, 99)] == [1, 3, 0, 2]


@pytest.mark.parametrize("k", [0, -1, -3])
def test_top_k_refuses_a_k_under_one_rather_than_slicing(k):
    with pytest.raises(ValueError, match=f"top_k must be at least 1, not {k}"):
        top_k(np.full(4, 0.25), LABELS, k)
