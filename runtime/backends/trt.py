"""A serialized TensorRT engine, run directly (TensorRT + cuda-python: the gpu image; no torch).

`sttm export --format tensorrt` builds the engine (`export.tensorrt`) and validates it with
this same runner; the server serves it with it. Buffers live as long as the engine, as in
TensorRT's samples: device buffers and page-locked host buffers for the profile's largest
batch are allocated once, so a call copies into pinned memory and never allocates.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
from pathlib import Path

import numpy as np

from runtime.backends import Backend, ModelLoadError
from runtime.metadata import read_sidecar

NEEDS = "serving an engine needs tensorrt and cuda-python (the gpu image)"
MODULES = {"tensorrt": "tensorrt", "cuda-python": "cuda"}  # package: the module it installs


def missing() -> str | None:
    """What serving an engine lacks here (one line; None: nothing), found without importing it:
    `sttm serve` says it before the server starts."""
    absent = [package for package, module in MODULES.items() if importlib.util.find_spec(module) is None]
    return f"{NEEDS}: {' and '.join(absent)} not installed" if absent else None


def load(path: Path) -> Backend:
    try:
        meta = read_sidecar(path)
        runner = TensorRTRunner(path)
    except ImportError as err:
        raise ModelLoadError(f"{path}: {NEEDS}: {err}") from None
    except (ValueError, RuntimeError) as err:
        raise ModelLoadError(str(err)) from None
    return Backend(runner, meta, path, "tensorrt", meta.precision)


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
        raise RuntimeError(f"CUDA call failed: {error}")
    return values[0] if len(values) == 1 else tuple(values)


def _pinned(cudart, shape: tuple[int, ...]) -> tuple[int, np.ndarray]:
    """Page-locked host memory for float32 `shape`: (pointer, a NumPy view of it)."""
    count = int(np.prod(shape))
    pointer = _checked(cudart.cudaMallocHost(count * 4))
    return pointer, np.ctypeslib.as_array((ctypes.c_float * count).from_address(int(pointer))).reshape(shape)


class TensorRTRunner:
    """Runs a serialized engine on NumPy input `[B, 3, T, S, S]` -> logits `[B, classes]`;
    one call at a time (a lock)."""

    def __init__(self, engine_path: str | Path) -> None:
        import tensorrt as trt

        cudart = _cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(self._logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{engine_path}: not an engine for this GPU / TensorRT version")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(outputs) != 1:  # `sttm export` builds engines with the logits only
            raise RuntimeError(f"{engine_path}: the engine has outputs {outputs}; expected one (the logits)")
        self.output = outputs[0]
        self.max_shape = tuple(self.engine.get_tensor_profile_shape(self.input, 0)[2])  # (min, opt, max)[2]
        self.context.set_input_shape(self.input, self.max_shape)
        max_out = tuple(self.context.get_tensor_shape(self.output))  # (max batch, classes)
        self._in = _checked(cudart.cudaMalloc(int(np.prod(self.max_shape)) * 4))  # float32 device buffers
        self._out = _checked(cudart.cudaMalloc(int(np.prod(max_out)) * 4))
        self._host_in_ptr, self._host_in = _pinned(cudart, self.max_shape)
        self._host_out_ptr, self._host_out = _pinned(cudart, max_out)
        self._stream = _checked(cudart.cudaStreamCreate())
        self.context.set_tensor_address(self.input, int(self._in))
        self.context.set_tensor_address(self.output, int(self._out))
        self._lock = threading.Lock()

    def __call__(self, video: np.ndarray) -> np.ndarray:
        cudart = _cudart()
        batch = video.shape[0]
        if batch > self.max_shape[0]:
            raise RuntimeError(f"batch {batch} is over the engine's profile maximum {self.max_shape[0]}")
        kind = cudart.cudaMemcpyKind
        with self._lock:
            host_in = self._host_in[:batch]  # (B, 3, T, S, S), pinned
            np.copyto(host_in, video, casting="same_kind")
            self.context.set_input_shape(self.input, host_in.shape)
            out = self._host_out[:batch]  # (B, classes), pinned
            _checked(
                cudart.cudaMemcpyAsync(
                    self._in, host_in.ctypes.data, host_in.nbytes, kind.cudaMemcpyHostToDevice, self._stream
                )
            )
            if not self.context.execute_async_v3(int(self._stream)):
                raise RuntimeError("TensorRT execution failed")
            _checked(
                cudart.cudaMemcpyAsync(
                    out.ctypes.data, self._out, out.nbytes, kind.cudaMemcpyDeviceToHost, self._stream
                )
            )
            _checked(cudart.cudaStreamSynchronize(self._stream))
            return out.copy()  # the pinned buffer is reused by the next call

    def __del__(self) -> None:
        if not hasattr(self, "_stream"):
            return
        cudart = _cudart()
        for pointer in (self._in, self._out):
            cudart.cudaFree(pointer)
        for pointer in (self._host_in_ptr, self._host_out_ptr):
            cudart.cudaFreeHost(pointer)
        cudart.cudaStreamDestroy(self._stream)
