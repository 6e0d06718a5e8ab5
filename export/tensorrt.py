"""ONNX -> serialized TensorRT engine (TensorRT 10 and 11). The engine is run — by the
server and by the export's validation — with `runtime.backends.trt.TensorRTRunner`
(`runtime.load_backend`).

Import-guarded: `tensorrt` exists only on NVIDIA machines. An engine is tied to the GPU
and the TensorRT version, so a JSON sidecar (`<engine>.json`) records the cache key
(GPU, compute capability, TensorRT version, shapes, precision) and the model metadata.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from export.errors import ExportError
from runtime.metadata import ModelMetadata, sidecar_path


def unavailable_reason() -> str | None:
    """None when an engine can be built here, else why not (one line)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed: build engines on an NVIDIA machine with `pip install -e .[gpu]`"
    import torch

    if not torch.cuda.is_available():
        return "no NVIDIA GPU is visible (torch.cuda.is_available() is False)"
    return None


def _major(trt) -> int:
    return int(trt.__version__.split(".")[0])


def cache_key(meta: ModelMetadata, max_batch: int, precision: str) -> dict:
    import tensorrt as trt
    import torch

    props = torch.cuda.get_device_properties(0)
    return {
        "gpu": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "tensorrt": trt.__version__,
        "input": [max_batch, 3, meta.input_spec.frames, meta.input_spec.size, meta.input_spec.size],
        "precision": precision,
    }


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    meta: ModelMetadata,
    precision: str = "fp32",
    max_batch: int = 8,
    workspace_gib: int = 4,
    timing_cache: str | Path | None = None,
) -> Path:
    """Parse the ONNX, build with a batch profile 1..max_batch (opt = max_batch // 2 or 1),
    reuse/update a timing cache, write the engine and its JSON sidecar. The engine has the
    logits only: a graph's `merge_index` output is unmarked (explaining runs on ONNX files)."""
    import tensorrt as trt

    reason = unavailable_reason()
    if reason:
        raise ExportError(reason)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT >= 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path}: {errors}")
    for i in reversed(range(network.num_outputs)):
        if network.get_output(i).name != meta.output_name:
            network.unmark_output(network.get_output(i))
    meta = replace(meta, merge_output="")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gib << 30)
    if precision == "fp16" and _major(trt) < 11:  # TensorRT 11 reads precision from the (fp16) graph
        config.set_flag(trt.BuilderFlag.FP16)
    shape = (3, meta.input_spec.frames, meta.input_spec.size, meta.input_spec.size)
    profile = builder.create_optimization_profile()
    profile.set_shape(meta.input_name, (1, *shape), (max(1, max_batch // 2), *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError("TensorRT engine build failed (see the TensorRT log above)")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(serialized))
    if cache_path:
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    sidecar = {"cache_key": cache_key(meta, max_batch, precision), "metadata": asdict(meta)}
    sidecar_path(engine_path).write_text(json.dumps(sidecar, indent=2))
    return engine_path
