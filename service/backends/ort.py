"""ONNX Runtime: a session on the first available of the configured providers."""

from __future__ import annotations

from pathlib import Path

import onnxruntime

from export.metadata import ModelMetadata
from service.backends import Backend, BackendOptions, ModelLoadError


def load(path: Path, options: BackendOptions) -> Backend:
    """The metadata is read from a CPU session; for ONNX Runtime's TensorRT provider, explicit
    batch profiles (1..max_batch) and an engine cache keep it from rebuilding engines when the
    batch size changes; CUDA and CPU follow as fallbacks."""
    session = _session(path, ["CPUExecutionProvider"], options.threads)
    try:
        meta = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map)
    except ValueError as err:
        raise ModelLoadError(f"{path}: {err}") from None
    available = onnxruntime.get_available_providers()
    chosen = [p for p in options.providers if p in available]
    if chosen and chosen != ["CPUExecutionProvider"]:
        session = _session(path, [provider(p, meta, options.max_batch, options.cache) for p in chosen], options.threads)

    def run(video):  # thread-safe: ORT sessions are
        return session.run([meta.output_name], {meta.input_name: video})[0]

    def explain(video):  # one call: the logits and every patch's final token
        logits, index = session.run([meta.output_name, meta.merge_output], {meta.input_name: video})
        return logits, index

    has_merges = bool(meta.merge_output) and meta.merge_output in {o.name for o in session.get_outputs()}
    provider = f"onnxruntime:{session.get_providers()[0]}"
    return Backend(run, meta, path, provider, meta.precision, explain if has_merges else None)


def provider(name: str, meta: ModelMetadata, max_batch: int, cache: Path | None):
    """A provider entry: the name, or for TensorRT (name, options) with shape profiles."""
    if name != "TensorrtExecutionProvider":
        return name
    shape = f"3x{meta.num_frames}x{meta.image_size}x{meta.image_size}"
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


def _session(path: Path, providers: list, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
        raise ModelLoadError(f"cannot load {path}: {str(err).splitlines()[0][:200]}") from None
