"""ONNX -> serialized TensorRT engine, and a runner to validate it (TensorRT 10 and 11).

Import-guarded: `tensorrt` exists only on NVIDIA machines. An engine is tied to the GPU
and the TensorRT version, so a JSON sidecar (`<engine>.json`) records the cache key
(GPU, compute capability, TensorRT version, shapes, precision) and the model metadata.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from export.errors import ExportError
from export.metadata import ModelMetadata


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
        "input": [max_batch, 3, meta.num_frames, meta.image_size, meta.image_size],
        "precision": precision,
    }


def sidecar_path(engine_path: str | Path) -> Path:
    """`model.plan` -> `model.plan.json`: the cache key and metadata of an engine."""
    return Path(f"{engine_path}.json")


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
    reuse/update a timing cache, write the engine and its JSON sidecar."""
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
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gib << 30)
    if precision == "fp16" and _major(trt) < 11:  # TensorRT 11 reads precision from the (fp16) graph
        config.set_flag(trt.BuilderFlag.FP16)
    shape = (3, meta.num_frames, meta.image_size, meta.image_size)
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


ENGINE_SUFFIXES = (".plan", ".engine")


def read_sidecar(engine_path: str | Path) -> ModelMetadata:
    """The metadata `build_engine` wrote beside an engine."""
    sidecar = sidecar_path(engine_path)
    if not sidecar.is_file():
        raise ExportError(
            f"{engine_path}: no metadata sidecar {sidecar.name} (`sttm export --format tensorrt` writes it)"
        )
    try:
        return ModelMetadata.from_dict(json.loads(sidecar.read_text())["metadata"])
    except (ValueError, KeyError, TypeError) as err:
        raise ExportError(f"{sidecar}: {err}") from None


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def _checked(result: tuple):
    """cuda-python returns `(error, *values)`: raise on an error, else the value(s)."""
    error, *values = result
    if int(error) != 0:  # cudaSuccess
        raise ExportError(f"CUDA call failed: {error}")
    return values[0] if len(values) == 1 else tuple(values)


class TensorRTRunner:
    """Runs a serialized engine on numpy input `[B, 3, T, S, S]` -> logits `[B, classes]`.

    Torch-free (TensorRT + cuda-python), so the server can serve an engine: device buffers
    for the profile's largest batch are allocated once; one call at a time (a lock).
    """

    def __init__(self, engine_path: str | Path) -> None:
        import threading

        import tensorrt as trt

        self._logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise ExportError(f"{engine_path}: not an engine for this GPU / TensorRT version")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.max_shape = tuple(self.engine.get_tensor_profile_shape(self.input, 0)[2])  # (min, opt, max)[2]
        self.context.set_input_shape(self.input, self.max_shape)
        max_out = tuple(self.context.get_tensor_shape(self.output))
        cudart = _cudart()
        self._in = _checked(cudart.cudaMalloc(int(np.prod(self.max_shape)) * 4))  # float32 buffers
        self._out = _checked(cudart.cudaMalloc(int(np.prod(max_out)) * 4))
        self._stream = _checked(cudart.cudaStreamCreate())
        self._lock = threading.Lock()

    def __call__(self, video: np.ndarray) -> np.ndarray:
        cudart = _cudart()
        x = np.ascontiguousarray(video, dtype=np.float32)  # (B, 3, T, S, S)
        if x.shape[0] > self.max_shape[0]:
            raise ExportError(f"batch {x.shape[0]} is over the engine's profile maximum {self.max_shape[0]}")
        with self._lock:
            self.context.set_input_shape(self.input, x.shape)
            out = np.empty(tuple(self.context.get_tensor_shape(self.output)), np.float32)  # (B, classes)
            self.context.set_tensor_address(self.input, int(self._in))
            self.context.set_tensor_address(self.output, int(self._out))
            kind = cudart.cudaMemcpyKind
            to_device, to_host = kind.cudaMemcpyHostToDevice, kind.cudaMemcpyDeviceToHost
            _checked(cudart.cudaMemcpyAsync(self._in, x.ctypes.data, x.nbytes, to_device, self._stream))
            if not self.context.execute_async_v3(int(self._stream)):
                raise ExportError("TensorRT execution failed")
            _checked(cudart.cudaMemcpyAsync(out.ctypes.data, self._out, out.nbytes, to_host, self._stream))
            _checked(cudart.cudaStreamSynchronize(self._stream))
        return out

    def __del__(self) -> None:
        cudart = _cudart() if hasattr(self, "_stream") else None
        if cudart is not None:
            cudart.cudaFree(self._in)
            cudart.cudaFree(self._out)
            cudart.cudaStreamDestroy(self._stream)
