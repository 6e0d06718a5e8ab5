"""`sttm predict`: the serving pipeline, locally, for scripts and quick checks."""

from __future__ import annotations

import time

from models.video import VideoError
from service.backend import Backend, softmax
from service.pipeline import prepare_clip
from service.schemas import ClassifyOptions
from service.settings import Settings


def predict(model: str, videos: list[str], top_k: int = 5) -> list[dict]:
    settings = Settings(model=model)  # `demo` resolves to the bundled model
    backend = Backend.load(settings.model, settings.providers)
    limits = settings.limits
    opts = ClassifyOptions(top_k=top_k)
    results = []
    for video in videos:
        try:
            prepared = prepare_clip(video, backend.meta, opts, limits)
        except (VideoError, OSError) as err:
            results.append({"video": video, "error": {"code": getattr(err, "code", "io_error"), "message": str(err)}})
            continue
        started = time.perf_counter()
        probs = softmax(backend(prepared.views)).mean(0)
        infer = time.perf_counter() - started
        order = probs.argsort()[::-1][:top_k]
        labels = backend.meta.labels
        results.append({
            "video": video,
            "predictions": [{"label": labels[i], "score": float(probs[i]), "index": int(i)} for i in order],
            "frames": [int(i) for i in prepared.indices[0]],
            "latency_ms": {"decode": prepared.decode_s * 1e3, "preprocess": prepared.preprocess_s * 1e3,
                           "inference": infer * 1e3},
        })  # fmt: skip
    return results
