"""The `torch` plugin of `runtime.backends`: `load(source, options) -> Backend` and `check`.

`source`: a `.pt2` written by `sttm export --format torch` (its metadata inside), or anything
`models.load_model` takes — a checkpoint (ours, Hugging Face, original, MMAction2), the bundled
demo's directory or a built-in name (random weights) — built and served directly, no export step.

It runs on a CUDA GPU where there is one (the model in fp16/bf16, a CUDA graph per batch size:
`ptruntime.graphs`), else on the CPU (fp32; bf16 on CPUs with bf16 units): `ptruntime.device`.
A low precision is held at load to the same model in fp32 on the same device, by the rule
every backend is held to (`runtime.agreement`); `auto` falls back to fp32 where it fails.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ptruntime.artifact import load_program, metadata_for, model_name, served_module
from ptruntime.device import Placement, choose, here
from ptruntime.graphs import BatchGraphs, capture_sizes
from runtime.agreement import ValidationError, compare, moving_squares
from runtime.backends import Backend, BackendOptions, ModelLoadError
from runtime.metadata import TORCH_SUFFIX, ModelMetadata

CHECK_CLIPS = 4
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
Outputs = tuple[np.ndarray, ...]


def check(source: Path, options: BackendOptions) -> None:
    """`ModelLoadError` (one line) where `load` would refuse `options` here, without loading weights."""
    _placement(options.precision)
    _require(source)


def _require(source: Path) -> None:
    """`source` exists, or names a built-in model."""
    from models import PRESETS

    if not source.exists() and (source.suffix == TORCH_SUFFIX or str(source) not in (*PRESETS, "demo")):
        names = "" if source.suffix == TORCH_SUFFIX else f" and is no built-in model (demo, {', '.join(PRESETS)})"
        raise ModelLoadError(f"model file {source} does not exist{names}")


def load(source: Path, options: BackendOptions) -> Backend:
    """Open `source` on this machine's best device, in the precision `options` ask for (checked)."""
    placement = _placement(options.precision)
    if options.threads > 0:
        torch.set_num_threads(options.threads)
    device = torch.device(placement.device)
    module, meta = _open(source, device)
    module = module.to(device)
    run, precision, reason = _runner(module, device, torch.float32), "fp32", placement.reason
    if placement.precision != "fp32":
        low = _runner(copy.deepcopy(module).to(DTYPES[placement.precision]), device, DTYPES[placement.precision])
        run, precision, reason = _checked(low, run, meta, placement, options)  # the fp32 copy: the check's
    provider = f"torch:{device.type}"
    if device.type == "cuda":
        run = _graphed(run, meta, DTYPES[precision], options.max_batch)
        provider = f"torch:cuda {torch.cuda.get_device_name(device)} (CUDA graphs)"
    explain = (lambda video: run(video)[:2]) if meta.merge_output else None
    return Backend(lambda video: run(video)[0], meta, source, provider, precision, explain, reason)


def _placement(requested: str) -> Placement:
    try:
        return choose(here(), requested)
    except ValueError as err:
        raise ModelLoadError(str(err)) from None


def _open(source: Path, device: torch.device) -> tuple[nn.Module, ModelMetadata]:
    """A `.pt2` program (for `device`), or a checkpoint / model name built by `models.load_model`."""
    _require(source)
    if source.suffix == TORCH_SUFFIX:
        try:
            return load_program(source, device)
        except ValueError as err:
            raise ModelLoadError(str(err)) from None
    from models import CheckpointError, load_model

    try:
        model = load_model(str(source))
    except (CheckpointError, OSError, ValueError) as err:
        raise ModelLoadError(str(err).splitlines()[0]) from None
    meta = metadata_for(model, model_name(str(source)))
    return served_module(model, meta), meta


def _runner(module: nn.Module, device: torch.device, dtype: torch.dtype) -> Callable[[np.ndarray], Outputs]:
    """`[B, 3, T, S, S]` float32 numpy -> the module's outputs as numpy (floats as float32)."""

    def forward(video: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            out = module(video)
        return out if isinstance(out, tuple) else (out,)

    def run(video: np.ndarray) -> Outputs:
        return _numpy(forward(_tensor(video, device, dtype)))

    run.forward, run.device, run.dtype = forward, device, dtype  # what `_graphed` captures
    return run


def _checked(
    low: Callable[[np.ndarray], Outputs],
    fp32: Callable[[np.ndarray], Outputs],
    meta: ModelMetadata,
    placement: Placement,
    options: BackendOptions,
) -> tuple[Callable[[np.ndarray], Outputs], str, str]:
    """`low` where it agrees with `fp32` on the generated clips (or the check is off), else fp32
    under `auto`; a `ModelLoadError` where that precision was asked for."""
    precision = placement.precision
    if not options.check:
        return low, precision, placement.reason
    videos = moving_squares(meta.input_spec, CHECK_CLIPS)
    try:
        compare(lambda v: low(v)[0], videos, fp32(videos)[0], f"torch-{precision}", precision, "torch-fp32", (1, 2))
    except ValidationError as err:
        failed = (
            f"torch {precision} does not match its fp32 on the check clips (max abs diff "
            f"{err.report.max_abs_diff:.3g} > {err.report.tolerance:g}, or top-1 differs)"
        )
        if options.precision != "auto":
            raise ModelLoadError(f"{meta.name}: {failed}: serve it with --precision fp32") from None
        return fp32, "fp32", f"auto: fp32, {failed}"
    return low, precision, placement.reason


def _graphed(run, meta: ModelMetadata, dtype: torch.dtype, max_batch: int) -> Callable[[np.ndarray], Outputs]:
    """`run` with its forward replayed from CUDA graphs (one per size in `capture_sizes(max_batch)`)."""
    clip = (3, meta.input_spec.frames, meta.input_spec.size, meta.input_spec.size)
    graphs = BatchGraphs(run.forward, clip, dtype, capture_sizes(max_batch))

    def replay(video: np.ndarray) -> Outputs:
        return _numpy(graphs(_tensor(video, run.device, dtype)))

    return replay


def _tensor(video: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(video, np.float32)).to(device=device, dtype=dtype)


def _numpy(outs: tuple[torch.Tensor, ...]) -> Outputs:
    """Outputs back on the host, floats as float32 (the merge index keeps its integers)."""
    return tuple((o.float() if o.is_floating_point() else o).cpu().numpy() for o in outs)
