"""OpenVINO on the CPU: the exported ONNX file compiled for this CPU, in fp32 or — on its
matrix units (AMX / AVX512-BF16) — bf16, fp16 where the CPU has no bf16; or an OpenVINO IR
statically quantised to int8 (`sttm export --format openvino --precision int8`, validated
against PyTorch when written), whose quantised matmuls run in int8 (AMX / VNNI) and the
rest — the merge decisions included — in fp32.

A low precision is checked at load, with the rule every export is held to
(`export.agreement`), against the same file compiled in fp32 on generated clips. Where the
whole model in bf16 fails it, the merge decisions are kept exact: every node a merge decision
(a TopK: nearest neighbours, density peaks, matches) depends on is compiled in fp32 and the
rest — the blocks after each decision's inputs, the merges' application, the head — in bf16,
as two compiled models run back to back (OpenVINO's CPU plugin takes no per-node precision
from Python). A combination that fails both is refused (`auto` falls back to fp32).
Shapes are static: the model is compiled for a batch of 1 and for the batcher's largest batch
(`options.max_batch`), and a batch of another size runs as largest-batch chunks and single clips.
On a dynamic batch dimension OpenVINO's CPU plugin neither fuses the elementwise ops into the
matmuls and attention nor folds shape arithmetic (it kept the keys of the first block in fp32
for a `ShapeOf`): VideoMAE-B STTM 0.38 in bf16 ran 7% slower (203 vs 189 ms a clip, batch 1;
184 vs 175 ms at batch 4), the unmerged model 2.5% slower. The price is one compiled model more
(~0.3 GB for VideoMAE-B in bf16) where `max_batch` > 1. Two keep the stored, dynamic batch, because
OpenVINO 2026.4 computes them wrongly with a fixed one: an int8 IR (see `load`) and the two-part
model of the exact decisions (see `_checked`).
Compiled models are cached in `options.cache` (OpenVINO's `CACHE_DIR`), so a restart does
not recompile.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino

from export.agreement import ValidationError, compare, moving_squares
from export.metadata import PREFIX, ModelMetadata
from service.backends import Backend, BackendOptions, ModelLoadError

# INFERENCE_PRECISION_HINT values: what the ops that are not quantised compute in
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
CHECK_CLIPS = 4
Infer = Callable[..., list[np.ndarray]]  # `(video, *more inputs) -> [outputs]`, output 0 the logits


def load(path: Path, options: BackendOptions) -> Backend:
    core = openvino.Core()
    if options.cache is not None:
        options.cache.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(options.cache)})
    try:
        model = core.read_model(str(path))
    except RuntimeError as err:
        raise ModelLoadError(f"cannot load {path}: {str(err).splitlines()[0][:200]}") from None
    meta = _metadata(model, path)
    precision = _precision(options.precision, core, meta.precision)
    # fixed batch sizes, but an int8 IR keeps its dynamic batch: OpenVINO 2026.4 computes one
    # with a fixed batch wrongly (tiny STTM int8: max diff 0.58 vs PyTorch, 0.04 dynamic)
    sizes = sorted({1, max(1, options.max_batch)}) if precision != "int8" else []

    def compiled(at: str) -> Infer:
        if not sizes:
            return _compiled(core, model, at, options.threads)
        return _batched({b: _compiled(core, _fixed(model, b), at, options.threads) for b in sizes})

    infer = compiled(precision)
    provider = "openvino:CPU"
    if precision in ("bf16", "fp16") and options.check:
        reference = _batched({1: _compiled(core, _fixed(model, 1), "fp32", options.threads)})  # clip by clip
        try:
            infer, provider = _checked(core, model, meta, precision, infer, reference, options.threads)
        except ValidationError as err:
            reason = f"openvino {precision} does not match its fp32 on the check clips (max abs diff " \
                     f"{err.report.max_abs_diff:.3g} > {err.report.tolerance:g}, or top-1 differs), " \
                     "not even with the merge decisions in fp32"  # fmt: skip
            if options.precision != "auto":
                raise ModelLoadError(f"{path}: {reason}: serve it with --precision fp32") from None
            infer, precision, provider = compiled("fp32"), "fp32", f"openvino:CPU ({reason}: fp32)"
    names = [output.get_names() for output in model.outputs]
    merges = next((i for i, n in enumerate(names) if meta.merge_output and meta.merge_output in n), None)
    explain = None if merges is None else _explainer(infer, merges)
    return Backend(_logits(infer), meta, path, provider, precision, explain)


def _checked(
    core: openvino.Core, model, meta: ModelMetadata, precision: str, infer: Infer, reference: Infer, threads: int
) -> tuple[Infer, str]:
    """The fastest form of `precision` that agrees with fp32: the whole model in it, else
    the merge decisions in fp32 (`_decisions_in_fp32`). Raises `ValidationError` (the whole
    model's) when neither agrees."""
    try:
        _check(_logits(infer), _logits(reference), meta, precision)
        return infer, "openvino:CPU"
    except ValidationError as err:
        whole = err
    # on the model as stored (a dynamic batch): with static shapes OpenVINO 2026.4 fuses the cut
    # model's second part into snippets that compute the demo wrongly in bf16 (max diff 4.2;
    # right with SNIPPETS_MODE=DISABLE)
    exact = _decisions_in_fp32(core, model, precision, threads)
    if exact is None:
        raise whole
    try:
        _check(_logits(exact), _logits(reference), meta, precision)
    except ValidationError:
        raise whole from None
    return exact, "openvino:CPU (merge decisions in fp32)"


def _decisions_in_fp32(core: openvino.Core, model, precision: str, threads: int):
    """The model as two compiled parts, `video -> [outputs]`: every node that a merge
    decision (TopK) depends on, in fp32; the rest in `precision`, fed the tensors it reads
    from the first part. None when the model makes no decisions (nothing merges). `model`
    is not changed: the parts are cut from two copies of it."""
    exact_part, rest = model.clone(), model.clone()
    twins = dict(zip((op.get_name() for op in rest.get_ordered_ops()), exact_part.get_ordered_ops()))
    decisions = [op for op in rest.get_ordered_ops() if op.get_type_name() == "TopK"]
    if not decisions:
        return None
    exact = _ancestors(decisions)
    crossing: dict[tuple[str, int], list] = {}  # (node, port) in the exact part -> inputs in the rest
    for op in rest.get_ordered_ops():
        if op.get_name() in exact:
            continue
        for port in op.inputs():
            source = port.get_source_output()
            node = source.get_node()
            if node.get_name() in exact and node.get_type_name() not in ("Constant", "Parameter"):
                crossing.setdefault((node.get_name(), source.get_index()), []).append(port)
    cuts = []
    for ports in crossing.values():
        source = ports[0].get_source_output()
        cut = openvino.op.Parameter(source.get_element_type(), source.get_partial_shape())
        for port in ports:
            port.replace_source_output(cut.output(0))
        cuts.append(cut)
    first = openvino.Model([twins[name].output(i) for name, i in crossing], exact_part.get_parameters(), "decisions")
    second = openvino.Model(rest.get_results(), [*rest.get_parameters(), *cuts], "rest")
    run_first, run_second = _compiled(core, first, "fp32", threads), _compiled(core, second, precision, threads)

    def infer(video: np.ndarray) -> list[np.ndarray]:
        return run_second(video, *run_first(video))

    return infer


def _fixed(model, batch: int):
    """A copy of `model` with its batch dimension fixed to `batch` (the rest as stored)."""
    fixed = model.clone()
    shape = fixed.inputs[0].get_partial_shape()
    shape[0] = batch
    fixed.reshape({fixed.inputs[0]: shape})
    return fixed


def _batched(runs: dict[int, Infer]) -> Infer:
    """One function over models compiled for the batch sizes in `runs` (1 among them): a batch
    runs in chunks of the largest size that fits, the outputs joined along the batch."""
    sizes = sorted(runs, reverse=True)

    def infer(video: np.ndarray, *more: np.ndarray) -> list[np.ndarray]:
        parts, start = [], 0
        while start < len(video):
            size = next(b for b in sizes if b <= len(video) - start)
            chunk = slice(start, start + size)
            parts.append(runs[size](video[chunk], *(m[chunk] for m in more)))
            start += size
        return parts[0] if len(parts) == 1 else [np.concatenate(out) for out in zip(*parts, strict=True)]

    return infer


def _ancestors(nodes: list) -> set[str]:
    """The names of `nodes` and of every node they depend on."""
    seen, stack = {n.get_name() for n in nodes}, list(nodes)
    while stack:
        for port in stack.pop().inputs():
            node = port.get_source_output().get_node()
            if node.get_name() not in seen:
                seen.add(node.get_name())
                stack.append(node)
    return seen


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


def _precision(requested: str, core: openvino.Core, stored: str) -> str:
    """`auto`: bf16 where the CPU has bf16 units, else fp32. bf16 asked for on a CPU without
    them: fp16 if it has fp16 units. int8 is what a quantised model stores, not a run-time
    hint: a quantised model runs int8 and only int8."""
    units = set(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    if stored == "int8":
        if requested not in ("auto", "int8"):
            raise ModelLoadError(f"the model is quantised to int8: it runs --precision int8 (or auto), not {requested}")
        return "int8"
    if requested == "int8":
        raise ModelLoadError("--precision int8 on OpenVINO needs a statically quantised model: sttm export MODEL "
                             "--format openvino --precision int8 --calib DATA -o OUT.xml")  # fmt: skip
    if requested == "auto":
        return "bf16" if "BF16" in units else "fp32"
    if requested == "bf16" and "BF16" not in units:
        requested = "fp16"
    if requested == "fp16" and "FP16" not in units:
        raise ModelLoadError("this CPU has neither bf16 nor fp16 units: use --precision fp32")
    return requested


def _compiled(core: openvino.Core, model, precision: str, threads: int) -> Infer:
    """The model compiled at `precision`, as a thread-safe function `(video, *more inputs) ->
    [outputs]` (one infer request per thread; output 0 is the logits)."""
    config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(model, "CPU", config)
    local = threading.local()

    def infer(video: np.ndarray, *more: np.ndarray) -> list[np.ndarray]:
        if not hasattr(local, "request"):
            local.request = compiled.create_infer_request()
        result = local.request.infer([np.ascontiguousarray(video, np.float32), *more])
        return [result[i].copy() for i in range(len(compiled.outputs))]

    return infer


def _check(run, reference, meta: ModelMetadata, precision: str) -> None:
    """`run` (a low precision) against `reference` (fp32) on generated clips: raises
    `ValidationError` unless they agree by the export's rule for `precision`."""
    videos = moving_squares(meta.input_spec, CHECK_CLIPS)
    compare(run, videos, reference(videos), f"openvino-{precision}", precision, "openvino-fp32", batches=(1, 2))
