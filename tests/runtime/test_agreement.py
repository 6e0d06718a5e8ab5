"""The agreement rule's arithmetic: what a runtime's rewrite of a file may add to the file's own
distance from PyTorch, and the clips a load-time check shares with the export's validation."""

from __future__ import annotations

import numpy as np
import pytest

from media import InputSpec
from runtime.agreement import REWRITE_TOLERANCE, TOLERANCE, moving_squares, rewrite_tolerance

SPEC = InputSpec(4, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 36, "uniform", 1)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_rewrite_gets_what_the_file_left_of_its_gate(precision):
    gate = TOLERANCE[precision]
    assert rewrite_tolerance(precision, 0.0) == gate
    assert rewrite_tolerance(precision, 0.3 * gate) == pytest.approx(0.7 * gate)
    assert rewrite_tolerance(precision, gate) == 0.0  # nothing left: only a bit-identical rewrite passes
    # a file that records no distance (written before it was recorded): the fixed rule
    assert rewrite_tolerance(precision) == REWRITE_TOLERANCE[precision]


def test_the_load_checks_clips_are_the_validations_first_ones():
    """What makes the rule sound: a check on the first clips of the validation's seed holds the
    served logits within the gate on clips whose distance from PyTorch the file recorded."""
    assert np.array_equal(moving_squares(SPEC, 2), moving_squares(SPEC, 6)[:2])
    assert not np.array_equal(moving_squares(SPEC, 2, seed=1), moving_squares(SPEC, 2))
