"""Validation is part of export: the exported model must agree with PyTorch.

Runs generated clips through both at several batch sizes; fails unless top-1 matches on
every clip and the max abs difference of logits is within tolerance.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from export.agreement import ValidationReport, compare, moving_squares
from export.errors import ExportError
from export.onnx import read_metadata
from models import VideoClassifier


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


def check_merge_index(model: VideoClassifier, path: str, clips: int = 6) -> int:
    """The exported `merge_index` equals PyTorch's on the validation clips, patch for patch
    (merge decisions are discrete: fp32 graphs must make the same ones). Returns the number
    of patches compared; raises `ExportError` naming how many differ."""
    import onnxruntime as ort

    from models.explain import WithMergeIndex

    videos = validation_clips(model, clips)
    with torch.no_grad():
        _, expected = WithMergeIndex(model)(videos)  # (clips, N) int32
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = read_metadata(path)
    got = session.run([meta.merge_output], {meta.input_name: videos.numpy()})[0]
    if got.dtype != np.int32 or got.shape != tuple(expected.shape):
        raise ExportError(f"{meta.merge_output}: {got.dtype} {got.shape}, expected int32 {tuple(expected.shape)}")
    wrong = int((got != expected.numpy()).sum())
    if wrong:
        raise ExportError(f"{meta.merge_output} differs from PyTorch on {wrong} of {got.size} patches")
    return got.size


def onnxruntime_runner(path: str, threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A CPU ONNX Runtime session as a function (warnings and above are logged)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 2
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda video: session.run(None, {name: video})[0]
