"""OpenVINO on the CPU: the exported ONNX file compiled for this CPU, in fp32 or — on its
matrix units (AMX / AVX512-BF16) — bf16, fp16 where the CPU has no bf16; or an OpenVINO IR
statically quantised to int8 (`sttm export --format openvino --precision int8`, validated
against PyTorch when written), whose quantised matmuls run in int8 (AMX / VNNI) and the
rest — the merge decisions included — in fp32.

A low precision is checked at load, with the rule every export is held to
(`runtime.agreement`), against the same file compiled in fp32 on generated clips. Where the
whole model in bf16 fails it, the merge decisions are kept exact: every node a merge decision
(a TopK: nearest neighbours, density peaks, matches) depends on is compiled in fp32 and the
rest — the blocks after each decision's inputs, the merges' application, the head — in bf16,
as two compiled models run back to back (OpenVINO's CPU plugin takes no per-node precision
from Python). A combination that fails both is refused (`auto` falls back to fp32).
Clips run one at a time, on a model compiled for a batch of 1 (static shapes): a lone clip on
all the threads (OpenVINO's LATENCY hint); a batch of several on the CPU's streams at once (the
THROUGHPUT hint's second compiled model: each stream a share of the cores and a clip of its
own), as many clips as a multiple of the streams fill, the rest alone. Measured on 2 cores,
VideoMAE-B STTM 0.38 bf16: a dynamic batch dimension cost 7% (the plugin neither fused the
elementwise ops into the matmuls and attention nor folded shape arithmetic, and kept the first
block's keys in fp32 for a `ShapeOf`: 203 vs 189 ms a clip); 2 streams of 1 thread ran 170 ms a
clip against 189 ms one after the other on 2 threads, and a static batch of 4 175 ms. The
streams model exists where `max_batch` >= its streams >= 2 (~0.3 GB more for VideoMAE-B in
bf16). Two keep the stored, dynamic batch, because OpenVINO 2026.4 computes them wrongly with
a fixed one: an int8 IR (see `load`) and the two-part model of the exact decisions (see
`_checked`).
Compiled models are cached in `options.cache` (OpenVINO's `CACHE_DIR`), so a restart does
not recompile.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino

from runtime.agreement import ValidationError, compare, moving_squares
from runtime.backends import Backend, BackendOptions, ModelLoadError
from runtime.backends.cpu import Choice, choose_precision, int8_weights_problem, this_cpu
from runtime.metadata import PREFIX, ModelMetadata

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
    precision, reason = dataclasses.astuple(_decided(model, path, meta, options.precision))
    # a batch of 1, but an int8 IR keeps its dynamic batch: OpenVINO 2026.4 computes one with a
    # fixed batch wrongly (tiny STTM int8: max diff 0.58 vs PyTorch, 0.04 dynamic)
    single = model if precision == "int8" else _fixed(model, 1)

    def served(at: str, alone: Infer | None = None) -> Infer:
        """Batches at precision `at`: a lone clip on `alone` (compiled here if not given), the rest on the streams."""
        alone = alone or _compiled(core, single, at, options.threads)
        return _clip_by_clip(alone, _streams(core, single, at, options.threads, options.max_batch))

    infer = served(precision)
    provider = "openvino:CPU"
    if precision in ("bf16", "fp16") and options.check:
        alone_fp32 = _compiled(core, single, "fp32", options.threads)  # the check's, and the fallback's
        reference = _clip_by_clip(alone_fp32)
        try:
            infer, provider = _checked(core, model, meta, precision, infer, reference, options.threads)
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
    try:
        model = openvino.Core().read_model(str(path))
    except RuntimeError as err:
        raise ModelLoadError(f"cannot load {path}: {str(err).splitlines()[0][:200]}") from None
    return _decided(model, path, _metadata(model, path), requested)


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


def _clip_by_clip(alone: Infer, streams: tuple[Infer, int] | None = None) -> Infer:
    """A batch through models that take one clip: `streams` = (run, count) takes any number of
    clips and runs `count` at once; as many clips as a multiple of `count` fill go there, the
    rest to `alone`, one by one (a clip alone is faster on all the threads than on a stream's
    share). Outputs joined along the batch, in order."""
    run_many, count = streams or (None, 0)

    def infer(video: np.ndarray) -> list[np.ndarray]:
        many = len(video) - len(video) % count if run_many and len(video) >= count else 0
        parts = [run_many(video[:many])] if many else []
        parts += [alone(video[i : i + 1]) for i in range(many, len(video))]
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


def _config(precision: str, threads: int, hint: str) -> dict:
    config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": hint}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def _compiled(core: openvino.Core, model, precision: str, threads: int) -> Infer:
    """The model compiled at `precision` for one request on all the threads, as a thread-safe
    function `(video, *more inputs) -> [outputs]` (one infer request per thread; output 0 is
    the logits)."""
    compiled = core.compile_model(model, "CPU", _config(precision, threads, "LATENCY"))
    local = threading.local()

    def infer(video: np.ndarray, *more: np.ndarray) -> list[np.ndarray]:
        if not hasattr(local, "request"):
            local.request = compiled.create_infer_request()
        result = local.request.infer([np.ascontiguousarray(video, np.float32), *more])
        return [result[i].copy() for i in range(len(compiled.outputs))]

    return infer


def _streams(core: openvino.Core, model, precision: str, threads: int, max_batch: int) -> tuple[Infer, int] | None:
    """The model (batch 1) compiled for the CPU's streams (the THROUGHPUT hint), as (a thread-safe
    function over any number of clips, run as many at once as there are streams; the stream
    count). None where batches cannot fill two streams (`max_batch`, or one stream here)."""
    if max_batch < 2:
        return None
    compiled = core.compile_model(model, "CPU", _config(precision, threads, "THROUGHPUT"))
    count = int(compiled.get_property("NUM_STREAMS"))
    if not 2 <= count <= max_batch:
        return None
    local = threading.local()

    def done(request: openvino.InferRequest, slot: tuple[list, int]) -> None:
        outputs, i = slot
        outputs[i] = [request.get_output_tensor(k).data.copy() for k in range(len(compiled.outputs))]

    def infer(video: np.ndarray) -> list[np.ndarray]:
        if not hasattr(local, "queue"):
            local.queue = openvino.AsyncInferQueue(compiled, count)
            local.queue.set_callback(done)
        outputs: list = [None] * len(video)
        for i in range(len(video)):
            local.queue.start_async([np.ascontiguousarray(video[i : i + 1], np.float32)], (outputs, i))
        local.queue.wait_all()
        return [np.concatenate(out) for out in zip(*outputs, strict=True)]

    return infer, count


def _check(run, reference, meta: ModelMetadata, precision: str) -> None:
    """`run` (a low precision) against `reference` (fp32) on generated clips: raises
    `ValidationError` unless they agree by the export's rule for `precision`."""
    videos = moving_squares(meta.input_spec, CHECK_CLIPS)
    compare(run, videos, reference(videos), f"openvino-{precision}", precision, "openvino-fp32", batches=(1, 2))
