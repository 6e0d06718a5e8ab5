"""What loading a checkpoint raises when it cannot be used."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint that cannot become the requested model; the message says why."""
