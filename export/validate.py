"""Validation is part of export: the exported model must agree with PyTorch.

Runs generated clips through both at several batch sizes; fails unless top-1 matches on
every clip and the max abs difference of logits is within tolerance.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from export.errors import ExportError
from models import VideoClassifier
from runtime import Backend, BackendOptions, load_backend
from runtime.agreement import ValidationReport, compare, moving_squares

# ONNX Runtime on the CPU, the graph as written (no fusion pass at load): the reference an
# export is validated with
PLAIN_ONNX = BackendOptions("onnxruntime", "auto", check=False, fuse=False)


def validation_clips(model: VideoClassifier, count: int, seed: int = 0) -> torch.Tensor:
    """The generated check clips (`moving_squares`) for `model`'s input."""
    return torch.from_numpy(moving_squares(model.input_spec, count, seed))


def validate(
    model: VideoClassifier,
    run: Callable[[np.ndarray], np.ndarray],
    backend: str,
    precision: str = "fp32",
    batches: tuple[int, ...] = (1, 3),
    clips: int = 6,
    reference: Callable[[np.ndarray], np.ndarray] | None = None,
) -> ValidationReport:
    """Compare `run` (numpy in, numpy logits out) with the PyTorch model (or with
    `reference`, e.g. ONNX Runtime for an engine) on generated clips; raise on failure."""
    videos = validation_clips(model, clips)
    if reference is None:
        with torch.no_grad():
            expected = model(videos).numpy()
    else:
        expected = reference(videos.numpy())
    name = "pytorch" if reference is None else "onnxruntime"
    return compare(run, videos.numpy(), expected, backend, precision, name, batches)


def open_onnx(path: str | Path) -> Backend:
    """A written ONNX file on ONNX Runtime's CPU provider, as stored: opened by the runtime the
    server uses (`runtime.load_backend`), so export and serving share one way to open it."""
    return load_backend(path, PLAIN_ONNX)


def check_merge_index(model: VideoClassifier, backend: Backend, clips: int = 6) -> int:
    """The exported `merge_index` (from `backend.explain`) equals PyTorch's on the validation
    clips, patch for patch (merge decisions are discrete: fp32 graphs must make the same ones).
    Returns the number of patches compared; raises `ExportError` naming how many differ."""
    from models.explain import WithMergeIndex

    meta = backend.meta
    if backend.explain is None:
        raise ExportError(f"{backend.path}: no {meta.merge_output or 'merge_index'} output to check")
    videos = validation_clips(model, clips)
    with torch.no_grad():
        _, expected = WithMergeIndex(model)(videos)  # (clips, N) int32
    _, got = backend.explain(videos.numpy())
    if got.dtype != np.int32 or got.shape != tuple(expected.shape):
        raise ExportError(f"{meta.merge_output}: {got.dtype} {got.shape}, expected int32 {tuple(expected.shape)}")
    wrong = int((got != expected.numpy()).sum())
    if wrong:
        raise ExportError(f"{meta.merge_output} differs from PyTorch on {wrong} of {got.size} patches")
    return got.size
