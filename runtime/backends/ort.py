"""ONNX Runtime: a session on the first available of the configured providers. On the CPU,
the attention the exporter decomposed runs in ORT's fused kernels (`backends.fusion`, a graph
pass at load, held to the plain graph there; the file itself stays standard ONNX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime

from runtime.agreement import REWRITE_TOLERANCE, ValidationError, compare, moving_squares, rewrite_tolerance
from runtime.backends import Backend, BackendOptions, ModelLoadError
from runtime.backends.cpu import int8_weights_problem, this_cpu
from runtime.metadata import ModelMetadata

CHECK_CLIPS = 2


def load(path: Path, options: BackendOptions) -> Backend:
    """The metadata is read from a CPU session; for ONNX Runtime's TensorRT provider, explicit
    batch profiles (1..max_batch) and an engine cache keep it from rebuilding engines when the
    batch size changes; CUDA and CPU follow as fallbacks."""
    session = open_session(path, ["CPUExecutionProvider"], options.threads)
    try:
        meta = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map)
    except ValueError as err:
        raise ModelLoadError(f"{path}: {err}") from None
    if meta.precision == "int8" and (problem := int8_weights_problem(this_cpu(), largest_int8_weight(path))):
        raise ModelLoadError(f"{path}: {problem}")
    available = onnxruntime.get_available_providers()
    chosen = [p for p in options.providers if p in available]
    note = ""
    if chosen and chosen != ["CPUExecutionProvider"]:
        providers = [provider(p, meta, options.max_batch, options.cache) for p in chosen]
        session = open_session(path, providers, options.threads)
    elif options.fuse:
        session, note = fused_or_plain(path, session, meta, options.threads)

    def run(video):  # thread-safe: ORT sessions are
        return session.run([meta.output_name], {meta.input_name: video})[0]

    def explain(video):  # one call: the logits and every patch's final token
        logits, index = session.run([meta.output_name, meta.merge_output], {meta.input_name: video})
        return logits, index

    has_merges = bool(meta.merge_output) and meta.merge_output in {o.name for o in session.get_outputs()}
    runs_on = f"onnxruntime:{session.get_providers()[0]}" + (f" ({note})" if note else "")
    return Backend(
        run,
        meta,
        path,
        runs_on,
        meta.precision,
        explain if has_merges else None,
        reason=f"{meta.precision}: what the file stores",
    )


def largest_int8_weight(path: Path) -> int:
    """The largest |weight| of the file's int8 matmuls (0 where it has none)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    weights = {w.name: w for w in proto.graph.initializer if w.data_type == onnx.TensorProto.INT8}
    slot = {"MatMulInteger": 1, "ConvInteger": 1, "QLinearMatMul": 3, "QLinearConv": 3}  # the weight input
    names = (n.input[slot[n.op_type]] for n in proto.graph.node if n.op_type in slot and len(n.input) > slot[n.op_type])
    found = [numpy_helper.to_array(weights[name]) for name in names if name in weights]
    return max((int(np.abs(w.astype(np.int16)).max()) for w in found if w.size), default=0)


def fused_or_plain(
    path: Path, plain: onnxruntime.InferenceSession, meta: ModelMetadata, threads: int, profile: str | None = None
) -> tuple[onnxruntime.InferenceSession, str]:
    """The CPU session that serves `path`, and a note for the provider name (empty for none):
    one on the graph with fused attention, held to the `plain` session on the first validation
    clips within what the file left of its precision's gate (`agreement.rewrite_tolerance`); the
    plain session (and why) when its precision has no fused kernels (they are fp32), nothing
    fuses, or the fused graph fails or disagrees. `profile`: ORT's profiler on in the fused
    session, files under that prefix (`benchmarks.ort_profile`)."""
    import onnx

    from runtime.backends import fusion

    if meta.precision not in REWRITE_TOLERANCE:
        return plain, ""
    try:  # an optimisation: whatever fails here (e.g. an ORT without a kernel feature), plain serves
        graph, count = fusion.fuse(onnx.load(str(path)))
        cpu = ["CPUExecutionProvider"]
        session = open_session(graph.SerializeToString(), cpu, threads, str(path), profile) if count else None
    except Exception as err:  # noqa: BLE001
        return plain, _not_fused(err)
    if session is None:
        return plain, ""
    videos = moving_squares(meta.input_spec, CHECK_CLIPS)
    expected = plain.run([meta.output_name], {meta.input_name: videos})[0]
    try:  # one call of 2 clips: the batched path (the bias folded per clip)
        compare(
            lambda v: session.run([meta.output_name], {meta.input_name: v})[0],
            videos,
            expected,
            "onnxruntime-fused",
            meta.precision,
            "onnxruntime",
            batches=(2,),
            tolerance=rewrite_tolerance(meta.precision, meta.validated_diff),
        )
    except ValidationError as err:
        return plain, f"fused attention differs by {err.report.max_abs_diff:.3g}: unfused"
    except Exception as err:  # noqa: BLE001 - the fused graph fails where the plain one runs
        return plain, _not_fused(err)
    return session, f"fused attention x{count}"


def _not_fused(err: Exception) -> str:
    return f"attention not fused: {str(err).splitlines()[0][:120]}"


def provider(name: str, meta: ModelMetadata, max_batch: int, cache: Path | None):
    """A provider entry: the name, or for TensorRT (name, options) with shape profiles."""
    if name != "TensorrtExecutionProvider":
        return name
    shape = f"3x{meta.input_spec.frames}x{meta.input_spec.size}x{meta.input_spec.size}"
    options = {
        "trt_profile_min_shapes": f"{meta.input_name}:1x{shape}",
        "trt_profile_opt_shapes": f"{meta.input_name}:{max(1, max_batch // 2)}x{shape}",
        "trt_profile_max_shapes": f"{meta.input_name}:{max_batch}x{shape}",
        "trt_fp16_enable": meta.precision == "fp16",
        "trt_engine_cache_enable": cache is not None,
        "trt_timing_cache_enable": cache is not None,
    }
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        options["trt_engine_cache_path"] = options["trt_timing_cache_path"] = str(cache)
    return (name, options)


def open_session(
    model: Path | bytes, providers: list, threads: int, name: str = "", profile: str | None = None
) -> onnxruntime.InferenceSession:
    """A session on a file, or on a serialized model (`name` says which file it came from);
    `profile`: ORT's profiler on, its file under that prefix."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if profile is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    try:
        return onnxruntime.InferenceSession(
            model if isinstance(model, bytes) else str(model), options, providers=providers
        )
    except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
        raise ModelLoadError(f"cannot load {name or model}: {str(err).splitlines()[0][:200]}") from None
