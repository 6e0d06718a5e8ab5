"""The model runner: an ONNX Runtime session (CPU, or CUDA/TensorRT providers where
present) and the metadata written into the file by `sttm export`. No torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.metadata import ModelMetadata


class ModelLoadError(RuntimeError):
    pass


@dataclass
class Backend:
    session: ort.InferenceSession
    meta: ModelMetadata
    path: Path

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @classmethod
    def load(cls, path: str | Path, providers: list[str], threads: int = 0) -> Backend:
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist")
        available = ort.get_available_providers()
        chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
            raise ModelLoadError(f"cannot load {path}: {str(err).splitlines()[0][:200]}") from None
        props = session.get_modelmeta().custom_metadata_map
        try:
            meta = ModelMetadata.from_props(props)
        except ValueError as err:
            raise ModelLoadError(f"{path}: {err}") from None
        return cls(session, meta, path)

    def input_shape(self, batch: int) -> tuple[int, ...]:
        m = self.meta
        return (batch, 3, m.num_frames, m.image_size, m.image_size)

    def __call__(self, video: np.ndarray) -> np.ndarray:
        """`[B, 3, T, S, S]` float32 -> logits `[B, classes]` (thread-safe: ORT sessions are)."""
        return self.session.run([self.meta.output_name], {self.meta.input_name: video})[0]

    def warm_up(self, batches: tuple[int, ...] = (1,)) -> None:
        for b in batches:
            self(np.zeros(self.input_shape(b), np.float32))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)
