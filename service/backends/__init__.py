"""Model runners behind one small interface: `load_backend(path, options) -> Backend`.

A backend is a function `[B, 3, T, S, S]` float32 -> logits `[B, classes]` plus the model's
metadata (what `sttm export` wrote: labels, input spec, merge). Which runtime opens a file:
- `.onnx`: ONNX Runtime (`backends.ort`: CPU, or TensorRT/CUDA providers where present);
- `.plan` / `.engine`: a serialized TensorRT engine run directly (`backends.trt`), its
  metadata in the `<engine>.json` sidecar.
Each runtime module is imported only when a file needs it (TensorRT exists only on NVIDIA
machines).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.metadata import ENGINE_SUFFIXES, ModelMetadata


class ModelLoadError(RuntimeError):
    """The model file cannot be served here; the message says why, in one line."""


@dataclass(frozen=True)
class BackendOptions:
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])  # ORT, in order of preference
    threads: int = 0  # intra-op threads; 0: the runtime decides
    max_batch: int = 8  # largest batch the batcher sends (engine profiles)
    cache: Path | None = None  # compiled-engine cache directory


@dataclass(frozen=True)
class Backend:
    run: Callable[[np.ndarray], np.ndarray]  # `[B, 3, T, S, S]` float32 -> logits `[B, classes]`; thread-safe
    meta: ModelMetadata
    path: Path
    provider: str  # e.g. "onnxruntime:CPUExecutionProvider", "tensorrt"

    def __call__(self, video: np.ndarray) -> np.ndarray:
        """`[B, 3, T, S, S]` float32 -> logits `[B, classes]`."""
        return self.run(video)

    def input_shape(self, batch: int) -> tuple[int, ...]:
        m = self.meta
        return (batch, 3, m.num_frames, m.image_size, m.image_size)

    def warm_up(self, batches: tuple[int, ...] = (1,)) -> None:
        for b in batches:
            self(np.zeros(self.input_shape(b), np.float32))


def load_backend(path: str | Path, options: BackendOptions = BackendOptions()) -> Backend:
    """Open an exported model with the runtime its file needs."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist")
    if path.suffix in ENGINE_SUFFIXES:
        from service.backends import trt

        return trt.load(path)
    from service.backends import ort

    return ort.load(path, options)
