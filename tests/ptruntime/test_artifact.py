"""What an exported model is named after (the artifact's metadata, Triton's model names)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from ptruntime.artifact import model_name  # noqa: E402 - after the skip


def test_a_model_is_named_after_how_it_was_given_and_a_training_run_after_the_run(tmp_path):
    """`sttm export RUN/best` named the model "best" (Triton's best_video, /v1/models' "best")."""
    assert model_name("demo") == "demo" and model_name("videomae-b") == "videomae-b"
    assert model_name("checkpoints/k400 v2.pth") == "k400_v2"
    assert model_name(str(tmp_path / "motion-run" / "best")) == "motion-run"
    assert model_name("runs/motion/last/") == "motion"
    assert model_name("best") == "best"  # a name, not a run's folder
