"""OpenVINO on the CPU: the exported file compiled for this CPU in fp32, bf16 (on bf16 units:
AMX / AVX512-BF16) or fp16 (no bf16 units), or a static int8 IR (`sttm export --format
openvino --precision int8`) whose quantised matmuls run in int8 and the rest in fp32.

A low precision is checked at load against the same file in fp32 (`runtime.agreement`'s
rule, on generated clips); where the whole model fails, the merge decisions run in fp32
(`ov_split`); where both fail, it is refused (`auto` falls back to fp32). Compiling and
scheduling clips over the CPU's streams: `ov_compile`. Compiled models are cached in
`options.cache` (OpenVINO's `CACHE_DIR`). Measurements and the OpenVINO 2026.4 bugs worked
around here: docs/runtimes.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import openvino

from runtime.agreement import ValidationError, compare, moving_squares
from runtime.backends import Backend, BackendOptions, ModelLoadError
from runtime.backends.cpu import Choice, choose_precision, int8_weights_problem, this_cpu
from runtime.backends.ov_compile import Infer, clip_by_clip, compiled, core, fixed, streams
from runtime.backends.ov_split import decisions_in_fp32
from runtime.metadata import PREFIX, ModelMetadata

CHECK_CLIPS = 4


def load(path: Path, options: BackendOptions) -> Backend:
    cache = options.cache
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    model = _read(path)
    meta = _metadata(model, path)
    precision, reason = dataclasses.astuple(_decided(model, path, meta, options.precision))
    # a batch of 1, but an int8 IR keeps its dynamic batch: OpenVINO 2026.4 computes one with a
    # fixed batch wrongly (tiny STTM int8: max diff 0.58 vs PyTorch, 0.04 dynamic)
    single = model if precision == "int8" else fixed(model, 1)

    def served(at: str, alone: Infer | None = None) -> Infer:
        """Batches at precision `at`: a lone clip on `alone` (compiled here if not given), the rest on the streams."""
        alone = alone or compiled(single, at, options.threads, cache)
        return clip_by_clip(alone, streams(single, at, options.threads, options.max_batch, cache))

    infer = served(precision)
    provider = "openvino:CPU"
    if precision in ("bf16", "fp16") and options.check:
        alone_fp32 = compiled(single, "fp32", options.threads, cache)  # the check's, and the fallback's
        reference = clip_by_clip(alone_fp32)
        try:
            infer, provider = _checked(model, meta, precision, infer, reference, options.threads, cache)
        except ValidationError as err:
            failed = (
                f"openvino {precision} does not match its fp32 on the check clips (max abs diff "
                f"{err.report.max_abs_diff:.3g} > {err.report.tolerance:g}, or top-1 differs), "
                "not even with the merge decisions in fp32"
            )
            if options.precision != "auto":
                raise ModelLoadError(f"{path}: {failed}: serve it with --precision fp32") from None
            infer, provider = served("fp32", alone_fp32), f"openvino:CPU ({failed}: fp32)"
            precision, reason = "fp32", f"auto: fp32, {precision} failed its check at load"
    names = [output.get_names() for output in model.outputs]
    merges = next((i for i, n in enumerate(names) if meta.merge_output and meta.merge_output in n), None)
    explain = None if merges is None else _explainer(infer, merges)
    return Backend(_logits(infer), meta, path, provider, precision, explain, reason)


def decide_precision(path: Path, requested: str) -> Choice:
    """The precision `load` runs the file in, decided without compiling it (`check_request`);
    `ModelLoadError` where this CPU or the file cannot run `requested`."""
    model = _read(path)
    return _decided(model, path, _metadata(model, path), requested)


def read_metadata(path: Path) -> ModelMetadata:
    """The file's metadata, read without compiling the model."""
    return _metadata(_read(path), path)


def _read(path: Path):
    try:
        return core().read_model(str(path))
    except RuntimeError as err:
        raise ModelLoadError(f"cannot load {path}: {openvino_reason(str(err))}") from None


def openvino_reason(message: str) -> str:
    """The line of an OpenVINO exception that says what is wrong ("Model can't be parsed"), not
    where in OpenVINO's sources it was raised ("Exception from src/inference/src/cpp/core.cpp:84:",
    all that was shown), at most 200 characters."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    return (said or lines or ["unknown error"])[-1][:200]


def _decided(model, path: Path, meta: ModelMetadata, requested: str) -> Choice:
    """`cpu.choose_precision` for this CPU, and an int8 model's weights held to what this CPU
    computes exactly (`cpu.int8_weights_problem`)."""
    try:
        choice = choose_precision(this_cpu(), requested, meta.precision)
    except ValueError as err:
        raise ModelLoadError(str(err)) from None
    if choice.value == "int8" and (problem := int8_weights_problem(this_cpu(), _largest_int8_weight(model))):
        raise ModelLoadError(f"{path}: {problem}")
    return choice


def _largest_int8_weight(model) -> int:
    """The largest |value| of the model's int8 constants (its quantised weights)."""
    constants = (op for op in model.get_ops() if op.get_type_name() == "Constant")
    weights = [op.get_data() for op in constants if op.get_element_type() == openvino.Type.i8]
    return max((int(np.abs(w.astype(np.int16)).max()) for w in weights if w.size), default=0)


def _checked(
    model, meta: ModelMetadata, precision: str, infer: Infer, reference: Infer, threads: int, cache: Path | None
) -> tuple[Infer, str]:
    """The fastest form of `precision` that agrees with fp32: the whole model in it, else
    the merge decisions in fp32 (`decisions_in_fp32`). Raises `ValidationError` (the whole
    model's) when neither agrees."""
    try:
        _check(_logits(infer), _logits(reference), meta, precision)
        return infer, "openvino:CPU"
    except ValidationError as err:
        whole = err
    # on the model as stored (a dynamic batch): with static shapes OpenVINO 2026.4 fuses the cut
    # model's second part into snippets that compute the demo wrongly in bf16 (max diff 4.2;
    # right with SNIPPETS_MODE=DISABLE)
    exact = decisions_in_fp32(model, precision, threads, cache)
    if exact is None:
        raise whole
    try:
        _check(_logits(exact), _logits(reference), meta, precision)
    except ValidationError:
        raise whole from None
    return exact, "openvino:CPU (merge decisions in fp32)"


def _logits(infer):
    return lambda video: infer(video)[0]


def _explainer(infer, merges: int):
    """`video -> (logits, merge_index)` from one model call."""

    def explain(video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = infer(video)
        return outputs[0], outputs[merges]

    return explain


def _metadata(model, path: Path) -> ModelMetadata:
    """What `sttm export` wrote into the file's metadata_props (OpenVINO: rt_info "framework")."""
    info = model.get_rt_info()  # an RTMap: `in` and [] but no .get
    framework = info["framework"] if "framework" in info else {}  # noqa: SIM401
    props = {k: v.astype(str) for k, v in framework.items() if k.startswith(PREFIX)}
    try:
        return ModelMetadata.from_props(props)
    except ValueError as err:
        raise ModelLoadError(f"{path}: {err}") from None


def _check(run, reference, meta: ModelMetadata, precision: str) -> None:
    """`run` (a low precision) against `reference` (fp32) on generated clips: raises
    `ValidationError` unless they agree by the export's rule for `precision`."""
    videos = moving_squares(meta.input_spec, CHECK_CLIPS)
    compare(run, videos, reference(videos), f"openvino-{precision}", precision, "openvino-fp32", batches=(1, 2))
