"""The Python-backend models of a Triton repository (`sttm export --format triton`): each
`model.py` there imports one of these classes as its `TritonPythonModel`. They run inside
Triton's stub process, where `triton_python_backend_utils` exists; the pure parts (options,
batching, answers) are plain functions, tested without Triton.

- `Preprocess`: one clip's bytes -> the model's input `[views, 3, T, S, S]`, by `media.load_clip`
  with the same limits, views cap and refusals as `sttm serve` (all from `STTM_*`, `RuntimeSettings`);
  a refused clip is an error response for that request (`<code>: <message>`), never a crash.
- `ModelRunner`: the exported ONNX model on our CPU backend (`load_backend`: OpenVINO or ONNX
  Runtime, `STTM_BACKEND` / `STTM_PRECISION`), for Triton builds without an ONNX Runtime backend;
  Triton's dynamic batcher hands it several requests, run as one batch.
- `Postprocess`: one clip's logits `[views, classes]` -> top-k labels and scores, the views
  averaged after softmax, exactly as `/v1/classify` answers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from media import VideoError, Views, load_clip
from runtime.backends import load_backend
from runtime.metadata import ModelMetadata
from runtime.postprocess import average_views, top_k
from runtime.settings import RuntimeSettings

VIEW_OPTIONS = ("num_clips", "crops", "frame_interval")  # optional INT32 inputs of the preprocess model
DEFAULT_TOP_K = 5


def _pb():
    import triton_python_backend_utils as pb_utils  # only inside Triton's stub process

    return pb_utils


def _version_dir(args: dict) -> Path:
    return Path(args["model_repository"]) / str(args["model_version"])


def _optional_int(request, name: str) -> int | None:
    tensor = _pb().get_input_tensor_by_name(request, name)
    return None if tensor is None else int(tensor.as_numpy().reshape(-1)[0])


def _error(err: Exception):
    pb = _pb()
    code = getattr(err, "code", type(err).__name__)
    return pb.InferenceResponse(error=pb.TritonError(f"{code}: {err}", pb.TritonError.INVALID_ARG))


def views_of(options: dict[str, int | None], max_views: int) -> Views:
    """The request's optional inputs -> `Views`; `VideoError("bad_option")` as `/v1/classify` says it."""
    num_clips, crops, interval = (options.get(k) for k in VIEW_OPTIONS)
    if crops not in (None, 1, 3):
        raise VideoError("bad_option", "crops must be 1 or 3")
    if (num_clips is not None and num_clips < 1) or (interval is not None and interval < 1):
        raise VideoError("bad_option", "num_clips and frame_interval must be >= 1")
    views = Views(frame_interval=interval, num_clips=num_clips or 1, crops=crops or 1)
    if views.num_clips * views.crops > max_views:
        raise VideoError("bad_option", f"num_clips x crops is over {max_views} views")
    return views


def clip_tensor(data: bytes, meta: ModelMetadata, views: Views, settings: RuntimeSettings) -> np.ndarray:
    """One clip's encoded bytes -> `[views, 3, T, S, S]` float32; `VideoError` when refused."""
    if len(data) > settings.max_upload_mb * (1 << 20):
        raise VideoError("too_large", f"the upload is over {settings.max_upload_mb:g} MB")
    return load_clip(data, meta.input_spec, views, settings.limits).tensor


def split_rows(batch: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """`[sum(sizes), ...]` -> one array per request, in order."""
    return np.split(batch, np.cumsum(sizes)[:-1])


def answer(logits: np.ndarray, labels: tuple[str, ...], k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """`[views, classes]` logits -> (labels, scores) of the top k, best first; `VideoError("bad_option")`
    for a k under 1, as `/v1/classify` refuses it."""
    try:
        best = top_k(average_views(logits), labels, DEFAULT_TOP_K if k is None else k)
    except ValueError as err:  # k under 1
        raise VideoError("bad_option", str(err)) from None
    return np.array([p.label.encode() for p in best], dtype=np.object_), np.array([p.score for p in best], np.float32)


class Preprocess:
    def initialize(self, args: dict) -> None:
        sidecar = json.loads((_version_dir(args) / "metadata.json").read_text())
        self.meta = ModelMetadata.from_dict(sidecar["metadata"])
        self.settings = RuntimeSettings()
        # a clip's views reach the model as one batch: no more than its max_batch_size
        self.max_views = min(self.settings.max_views, int(sidecar["max_batch"]))

    def execute(self, requests: list) -> list:
        pb = _pb()
        responses = []
        for request in requests:
            try:
                data = pb.get_input_tensor_by_name(request, "video").as_numpy().reshape(-1)[0]
                views = views_of({k: _optional_int(request, k) for k in VIEW_OPTIONS}, self.max_views)
                tensor = clip_tensor(bytes(data), self.meta, views, self.settings)
            except (VideoError, OSError) as err:
                responses.append(_error(err))
                continue
            responses.append(pb.InferenceResponse([pb.Tensor("clip", tensor)]))
        return responses


class ModelRunner:
    def initialize(self, args: dict) -> None:
        self.backend = load_backend(
            _version_dir(args) / "model.onnx", RuntimeSettings().backend_options
        )  # ModelLoadError
        self.meta = self.backend.meta

    def execute(self, requests: list) -> list:
        pb = _pb()
        inputs = [pb.get_input_tensor_by_name(r, self.meta.input_name).as_numpy() for r in requests]
        logits = self.backend(np.concatenate(inputs) if len(inputs) > 1 else inputs[0])
        parts = split_rows(logits, [len(x) for x in inputs])
        return [pb.InferenceResponse([pb.Tensor(self.meta.output_name, p)]) for p in parts]


class Postprocess:
    def initialize(self, args: dict) -> None:
        labels_file = Path(args["model_repository"]) / "labels.txt"
        self.labels = tuple(labels_file.read_text(encoding="utf-8").splitlines())

    def execute(self, requests: list) -> list:
        pb = _pb()
        responses = []
        for request in requests:
            logits = pb.get_input_tensor_by_name(request, "logits").as_numpy()
            try:
                labels, scores = answer(logits, self.labels, _optional_int(request, "top_k"))
            except VideoError as err:
                responses.append(_error(err))
                continue
            responses.append(pb.InferenceResponse([pb.Tensor("labels", labels), pb.Tensor("scores", scores)]))
        return responses
