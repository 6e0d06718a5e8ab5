"""The model runner and its metadata, from what `sttm export` wrote. No torch.

- `.onnx`: an ONNX Runtime session (CPU, or TensorRT/CUDA providers where present); the
  metadata is in the file.
- `.plan` / `.engine`: a serialized TensorRT engine run directly (TensorRT + cuda-python,
  the gpu image); the metadata is in its `<engine>.json` sidecar.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.errors import ExportError
from export.metadata import ModelMetadata
from export.tensorrt import ENGINE_SUFFIXES, TensorRTRunner, read_sidecar


class ModelLoadError(RuntimeError):
    pass


@dataclass
class Backend:
    run: Callable[[np.ndarray], np.ndarray]  # `[B, 3, T, S, S]` float32 -> logits `[B, classes]`
    meta: ModelMetadata
    path: Path
    provider: str  # e.g. "onnxruntime:CPUExecutionProvider", "tensorrt"

    @classmethod
    def load(
        cls, path: str | Path, providers: list[str], threads: int = 0, max_batch: int = 8, cache: Path | None = None
    ) -> Backend:
        """Open `path` with the first available of `providers`. For ONNX Runtime's TensorRT
        provider, explicit batch profiles (1..max_batch) and an engine cache keep it from
        rebuilding engines when the batch size changes; CUDA and CPU follow as fallbacks."""
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist")
        if path.suffix in ENGINE_SUFFIXES:
            return cls._engine(path)
        session = cls._session(path, ["CPUExecutionProvider"], threads)
        try:
            meta = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map)
        except ValueError as err:
            raise ModelLoadError(f"{path}: {err}") from None
        available = ort.get_available_providers()
        chosen = [p for p in providers if p in available]
        if chosen and chosen != ["CPUExecutionProvider"]:
            session = cls._session(path, [cls._provider(p, meta, max_batch, cache) for p in chosen], threads)

        def run(video: np.ndarray) -> np.ndarray:  # thread-safe: ORT sessions are
            return session.run([meta.output_name], {meta.input_name: video})[0]

        return cls(run, meta, path, f"onnxruntime:{session.get_providers()[0]}")

    @classmethod
    def _engine(cls, path: Path) -> Backend:
        try:
            meta = read_sidecar(path)
            runner = TensorRTRunner(path)
        except ImportError as err:
            raise ModelLoadError(
                f"{path}: serving an engine needs tensorrt and cuda-python (the gpu image): {err}"
            ) from None
        except ExportError as err:
            raise ModelLoadError(str(err)) from None
        return cls(runner, meta, path, "tensorrt")

    @staticmethod
    def _provider(name: str, meta: ModelMetadata, max_batch: int, cache: Path | None):
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

    @staticmethod
    def _session(path: Path, providers: list, threads: int) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            return ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelLoadError(f"cannot load {path}: {str(err).splitlines()[0][:200]}") from None

    def input_shape(self, batch: int) -> tuple[int, ...]:
        m = self.meta
        return (batch, 3, m.num_frames, m.image_size, m.image_size)

    def __call__(self, video: np.ndarray) -> np.ndarray:
        """`[B, 3, T, S, S]` float32 -> logits `[B, classes]`."""
        return self.run(video)

    def warm_up(self, batches: tuple[int, ...] = (1,)) -> None:
        for b in batches:
            self(np.zeros(self.input_shape(b), np.float32))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)
