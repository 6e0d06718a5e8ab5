"""The `torch` plugin of `runtime.backends`: `load(source, options) -> Backend` and `check`.

`source`: a `.pt2` written by `sttm export --format torch` (a `torch.export` program) or
`--format aoti` (an AOTInductor package, compiled for one device: `ptruntime.aoti`), each with its
metadata inside, or anything `models.load_model` takes — a checkpoint (ours, Hugging Face,
original, MMAction2), the bundled demo's directory or a built-in name (random weights) — built
and served directly, no export step. What the backend builds (not an AOTInductor package) can be
`torch.compile`d at load (`BackendOptions.compile`, `STTM_TORCH_COMPILE`), held to the eager model.

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

from ptruntime import aoti
from ptruntime.artifact import load_program, metadata_for, model_name, served_module
from ptruntime.device import Placement, choose, for_program, here
from ptruntime.graphs import BatchGraphs, capture_sizes
from runtime.agreement import ValidationError, compare, moving_squares
from runtime.backends import Backend, BackendOptions, ModelLoadError
from runtime.metadata import TORCH_SUFFIX, ModelMetadata

CHECK_CLIPS = 4
DTYPES = aoti.DTYPES
COMPILE_MODES = ("off", "default", "max-autotune-no-cudagraphs", "reduce-overhead")
Outputs = tuple[np.ndarray, ...]


def check(source: Path, options: BackendOptions) -> None:
    """`ModelLoadError` (one line) where `load` would refuse `options` here, without loading weights."""
    _check_compile_mode(options)
    if aoti.is_package(source):
        _check_package(source, options)
        return
    _placement(options.precision, program=source.suffix == TORCH_SUFFIX)
    _require(source)


def _require(source: Path) -> None:
    """`source` exists, or names a built-in model; a file starts as a weights file can."""
    from models import PRESETS
    from models.checkpoint import not_weights_file

    if not source.exists() and (source.suffix == TORCH_SUFFIX or str(source) not in (*PRESETS, "demo")):
        names = "" if source.suffix == TORCH_SUFFIX else f" and is no built-in model (demo, {', '.join(PRESETS)})"
        raise ModelLoadError(f"model file {source} does not exist{names}")
    # a checkpoint's first bytes (a .pt2 program says for itself what is wrong with it)
    if source.is_file() and source.suffix != TORCH_SUFFIX and (what := not_weights_file(source)):
        raise ModelLoadError(f"{source}: not a checkpoint: this is {what}")


def load(source: Path, options: BackendOptions) -> Backend:
    """Open `source` on this machine's best device, in the precision `options` ask for (checked)."""
    _check_compile_mode(options)
    if options.threads > 0:
        torch.set_num_threads(options.threads)
    if aoti.is_package(source):
        return _package(source, options)
    placement = _placement(options.precision, program=source.suffix == TORCH_SUFFIX)
    _require(source)
    device = torch.device(placement.device)
    module, meta = _open(source, device)
    module = module.to(device)
    eager = _runner(module, device, torch.float32)
    run, precision, reason = eager, "fp32", placement.reason
    if placement.precision != "fp32":
        low = copy.deepcopy(module).to(DTYPES[placement.precision])
        low = _runner(_compiled(low, options.compile), device, DTYPES[placement.precision])
        run, precision, reason = _checked(low, eager, meta, placement, options)  # the fp32 copy: the check's
    elif options.compile != "off":
        run, precision, reason = _checked(_runner(_compiled(module, options.compile), device, torch.float32),
                                          eager, meta, placement, options, "torch.compile")  # fmt: skip
    compiled = options.compile != "off" and run is not eager
    provider = f"torch:{device.type}" + (f" (torch.compile {options.compile})" if compiled else "")
    if device.type == "cuda":
        own_graphs = not (compiled and options.compile == "reduce-overhead")  # torch.compile's graphs otherwise
        run = _graphed(run, meta, DTYPES[precision], options.max_batch) if own_graphs else run
        provider = f"torch:cuda {torch.cuda.get_device_name(device)} ({_what(compiled, options.compile)})"
    return _backend(run, meta, source, provider, precision, reason)


def _check_compile_mode(options: BackendOptions) -> None:
    if options.compile not in COMPILE_MODES:
        raise ModelLoadError(f"STTM_TORCH_COMPILE={options.compile}: one of {', '.join(COMPILE_MODES)}")


def _what(compiled: bool, mode: str) -> str:
    """How a CUDA model runs, for `/v1/models`."""
    if not compiled:
        return "CUDA graphs"
    return f"torch.compile {mode}" + ("" if mode == "reduce-overhead" else ", CUDA graphs")


def _backend(run, meta: ModelMetadata, source: Path, provider: str, precision: str, reason: str) -> Backend:
    explain = (lambda video: run(video)[:2]) if meta.merge_output else None
    return Backend(lambda video: run(video)[0], meta, source, provider, precision, explain, reason)


def _compiled(module: nn.Module, mode: str) -> Callable:
    """`module` under torch.compile in `mode` ("default": no mode), or itself where it is off."""
    if mode == "off":
        return module
    return torch.compile(module, mode=None if mode == "default" else mode)


def _check_package(source: Path, options: BackendOptions) -> tuple[ModelMetadata, aoti.Target]:
    """The package's metadata and target, or `ModelLoadError` (one line) where this machine or
    `options` cannot run it, read from the archive alone (nothing compiled is loaded)."""
    try:
        meta, target = aoti.read_package(source)
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    if options.precision not in ("auto", target.precision):
        raise ModelLoadError(
            f"{source}: an AOTInductor package computes in what it was compiled for ({target.precision}), "
            f"not --precision {options.precision}: export it with --precision {options.precision}"
        )
    if (why := aoti.refusal(target, aoti.here(), options.max_batch)) is not None:
        raise ModelLoadError(f"{source}: {why}")
    return meta, target


def _package(source: Path, options: BackendOptions) -> Backend:
    """An AOTInductor package, on the device and in the precision it was compiled for (refused in
    one line elsewhere), held at load to the fp32 logits it carries; CUDA graphs on a GPU."""
    meta, target = _check_package(source, options)
    try:
        compiled = aoti.load_compiled(source, target)
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    device, dtype = torch.device(target.device), DTYPES[target.precision]
    run = _runner(compiled, device, dtype)
    if options.check:
        _hold_package(run, meta, target)
    provider, reason = f"torch:{device.type} (AOTInductor)", f"an AOTInductor package for {target.describe()}"
    reason += "; compiled ahead of time (STTM_TORCH_COMPILE does not apply)" if options.compile != "off" else ""
    if device.type == "cuda":
        run = _graphed(run, meta, dtype, options.max_batch)
        provider = f"torch:cuda {torch.cuda.get_device_name(device)} (AOTInductor, CUDA graphs)"
    return _backend(run, meta, source, provider, target.precision, reason)


def _hold_package(run: Callable[[np.ndarray], Outputs], meta: ModelMetadata, target: aoti.Target) -> None:
    """The package's logits on its check clips agree with the fp32 model's it carries, or a
    `ModelLoadError` (the rule every backend is held to: `runtime.agreement`)."""
    expected = np.asarray(target.check_logits, np.float32)
    try:
        compare(lambda v: run(v)[0], aoti.check_clips(meta), expected, "aoti", target.precision, "fp32 model", (1, 2))
    except ValidationError as err:
        raise ModelLoadError(
            f"{meta.name}: the AOTInductor package does not reproduce the model it was compiled from "
            f"(max abs diff {err.report.max_abs_diff:.3g} > {err.report.tolerance:g}, or top-1 differs)"
        ) from None


def _placement(requested: str, program: bool = False) -> Placement:
    """Where and in what precision to run (`program`: a `torch.export` program), or one line."""
    try:
        placement = choose(here(), requested)
        return for_program(placement, requested) if program else placement
    except ValueError as err:
        raise ModelLoadError(f"--backend torch: {err} (or auto)") from None


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
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

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
    what: str = "",
) -> tuple[Callable[[np.ndarray], Outputs], str, str]:
    """`low` (a low precision, or `what`: torch.compile) where it agrees with the eager `fp32` on
    the generated clips (or the check is off), else fp32 under `auto`; a `ModelLoadError` where
    that precision (or compiling) was asked for."""
    precision = placement.precision
    if not options.check:
        return low, precision, placement.reason
    videos = moving_squares(meta.input_spec, CHECK_CLIPS)
    name = what or f"torch {precision}"
    try:
        compare(lambda v: low(v)[0], videos, fp32(videos)[0], name, precision, "torch-fp32", (1, 2))
    except ValidationError as err:
        failed = (
            f"{name} does not match its eager fp32 on the check clips (max abs diff "
            f"{err.report.max_abs_diff:.3g} > {err.report.tolerance:g}, or top-1 differs)"
        )
        if options.precision != "auto" or what:
            fix = "STTM_TORCH_COMPILE=off" if what else "--precision fp32"
            raise ModelLoadError(f"{meta.name}: {failed}: serve it with {fix}") from None
        return fp32, "fp32", f"auto: fp32, {failed}"
    return low, precision, placement.reason + (f"; {what} (checked against eager)" if what else "")


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
