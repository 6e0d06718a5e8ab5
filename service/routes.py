"""`/v1`: classify a clip, a timeline of a long video, the model's metadata."""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query, Request
from pydantic import ValidationError

from service.backend import softmax
from service.batcher import QueueFullError
from service.errors import ApiError, documented
from service.pipeline import prepare_clip, prepare_timeline
from service.runtime import ReadyDep, Runtime
from service.schemas import (
    ClassifyOptions,
    ClassifyResponse,
    Latency,
    ModelInfo,
    Prediction,
    TimelineOptions,
    TimelineResponse,
    VideoMeta,
    Window,
)
from service.upload import video_body

router = APIRouter(prefix="/v1", tags=["v1"])
ERRORS = documented(400, 401, 413, 415, 422, 503)
VIDEO_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
            },
            "video/*": {"schema": {"type": "string", "format": "binary"}},
        }
    }
}


def _top(probs: np.ndarray, labels: tuple[str, ...], k: int) -> list[Prediction]:
    order = np.argsort(-probs)[: min(k, len(labels))]
    return [Prediction(label=labels[i], score=float(probs[i]), index=int(i)) for i in order]


def _options(model, query: dict, fields: dict):
    try:
        return model.model_validate({**query, **fields})
    except ValidationError as err:
        msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ApiError(422, "invalid_request", msg) from None


async def run_model(rt: Runtime, views: np.ndarray) -> tuple[np.ndarray, float, float]:
    started = time.perf_counter()
    try:
        logits, queue_s = await rt.batcher.submit(views)
    except QueueFullError as err:
        rt.metrics.rejected.inc()
        raise ApiError(503, "overloaded", str(err), retry_after=1) from None
    return logits, queue_s, time.perf_counter() - started - queue_s


def _latency(rt: Runtime, started: float, decode: float, pre: float, queue: float, infer: float) -> Latency:
    seconds = {"decode": decode, "preprocess": pre, "queue": queue, "inference": infer,
               "total": time.perf_counter() - started}  # fmt: skip
    rt.metrics.observe(seconds)
    return Latency(**{k: round(v * 1000, 2) for k, v in seconds.items()})


def _video_meta(info) -> VideoMeta:
    return VideoMeta(duration_s=round(info.duration_s, 3), fps=round(info.fps, 3), width=info.width,
                     height=info.height, codec=info.codec, frames=info.frames)  # fmt: skip


@router.post("/classify", response_model=ClassifyResponse, responses=ERRORS, openapi_extra=VIDEO_BODY)
async def classify(request: Request, rt: ReadyDep, options: Annotated[ClassifyOptions, Query()]) -> ClassifyResponse:
    """Classify one clip (multipart `file` or a raw `video/*` body). Options may also be
    sent as multipart form fields."""
    started = time.perf_counter()
    async with video_body(request) as (file, fields):
        opts = _options(ClassifyOptions, dict(request.query_params), fields) if fields else options
        if opts.num_clips * opts.crops > rt.settings.max_views:
            raise ApiError(422, "invalid_request", f"num_clips x crops is over {rt.settings.max_views} views")
        meta = rt.backend.meta
        prepared = await rt.in_pool(prepare_clip, file, meta, opts, rt.limits)
    logits, queue_s, infer_s = await run_model(rt, prepared.views)
    probs = softmax(logits).mean(0)  # views averaged after softmax (MMAction2)
    return ClassifyResponse(
        model=meta.name,
        predictions=_top(probs, meta.labels, opts.top_k),
        frames=[int(i) for i in prepared.indices[0]],
        views=len(prepared.views),
        video=_video_meta(prepared.info),
        latency_ms=_latency(rt, started, prepared.decode_s, prepared.preprocess_s, queue_s, infer_s),
    )


@router.post("/timeline", response_model=TimelineResponse, responses=ERRORS, openapi_extra=VIDEO_BODY)
async def timeline(request: Request, rt: ReadyDep, options: Annotated[TimelineOptions, Query()]) -> TimelineResponse:
    """Classify a long video window by window (`window_s`, `stride_s`)."""
    started = time.perf_counter()
    async with video_body(request) as (file, fields):
        opts = _options(TimelineOptions, dict(request.query_params), fields) if fields else options
        meta = rt.backend.meta
        most = min(rt.settings.max_windows, rt.settings.max_queue)  # more never fit in the queue: 422, not 503
        prepared, starts = await rt.in_pool(prepare_timeline, file, meta, opts, rt.limits, most)
    logits, queue_s, infer_s = await run_model(rt, prepared.views)
    probs = softmax(logits)  # (windows, classes)
    duration = prepared.info.duration_s
    windows = [
        Window(
            start_s=round(float(s), 3),
            end_s=round(min(float(s) + opts.window_s, duration), 3),
            predictions=_top(p, meta.labels, opts.top_k),
        )  # fmt: skip
        for s, p in zip(starts, probs)
    ]
    return TimelineResponse(
        model=meta.name, windows=windows, video=_video_meta(prepared.info),
        latency_ms=_latency(rt, started, prepared.decode_s, prepared.preprocess_s, queue_s, infer_s),
    )  # fmt: skip


@router.get("/models", response_model=list[ModelInfo], responses=documented(401, 503))
async def models(rt: ReadyDep) -> list[ModelInfo]:
    m = rt.backend.meta
    return [
        ModelInfo(
            name=m.name,
            arch=m.arch,
            labels=list(m.labels),
            frames=m.num_frames,
            input_size=m.image_size,
            mean=list(m.mean),
            std=list(m.std),
            sampling=m.sampling,
            frame_interval=m.frame_interval,
            merge=m.merge,
            reduction=m.reduction,
            gflops=m.gflops,
            gflops_unmerged=m.gflops_unmerged,
            backend=rt.backend.provider,
            precision=m.precision,
        )  # fmt: skip
    ]
