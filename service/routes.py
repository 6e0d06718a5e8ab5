"""`/v1`: classify a clip, a timeline of a long video, the model's metadata. The routes
only translate: HTTP in -> the classify use case -> the response schema."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from service import timeline_formats
from service.app_state import AppStateDep, ClassifierDep
from service.auth import Protected
from service.errors import ApiError, describe, documented
from service.schemas import ClassifyQuery, ClassifyResponse, ModelInfo, TimelineQuery, TimelineResponse
from service.upload import video_body

router = APIRouter(prefix="/v1", tags=["v1"], dependencies=Protected)
ERRORS = documented(400, 401, 408, 413, 415, 422, 503)  # 408, 413: service.upload.BodyLimit
VIDEO_BODY = {  # the video is required (400 `empty_body`, `missing_file` without it): the schema says so
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "video/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _options(model, query: dict, fields: dict):
    """Options sent as multipart form fields (they override the query string)."""
    try:
        return model.model_validate({**query, **fields})
    except ValidationError as err:
        raise ApiError(422, "invalid_request", describe(err.errors())) from None


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    openapi_extra=VIDEO_BODY,
)
async def classify(
    request: Request, rt: AppStateDep, classifier: ClassifierDep, query: Annotated[ClassifyQuery, Query()]
) -> ClassifyResponse:
    """Classify one clip (multipart `file` or a raw `video/*` body). Options may also be
    sent as multipart form fields. `explain=true` adds `merges`: which patches were merged."""
    started = time.perf_counter()
    async with video_body(request) as (file, fields):
        query = _options(ClassifyQuery, dict(request.query_params), fields) if fields else query
        result = await classifier.classify(file, query.options(), started)
    rt.metrics.observe(result.latency)
    return ClassifyResponse.model_validate(result)


TEXT_FORMATS = {media_type: {"schema": {"type": "string"}} for media_type in ("text/vtt", "text/csv")}


@router.post(
    "/timeline",
    response_model=TimelineResponse,
    responses={**ERRORS, 200: {"content": TEXT_FORMATS}},
    openapi_extra=VIDEO_BODY,
)
async def timeline(
    request: Request, rt: AppStateDep, classifier: ClassifierDep, query: Annotated[TimelineQuery, Query()]
) -> TimelineResponse | Response:
    """Classify a whole video window by window (`window_s`, `stride_s`; the last window may be
    partial) and merge the windows into action segments (`min_score`, `min_windows`). JSON,
    or the segments as WebVTT / CSV (`format=vtt|csv` or `Accept: text/vtt|text/csv`)."""
    started = time.perf_counter()
    async with video_body(request) as (file, fields):
        query = _options(TimelineQuery, dict(request.query_params), fields) if fields else query
        result = await classifier.timeline(file, query.options(), started)
    rt.metrics.observe(result.latency)
    answer = TimelineResponse.model_validate(result)
    fmt = timeline_formats.negotiate(query.format, request.headers.get("accept"))
    if fmt == "json":
        return answer
    return Response(timeline_formats.render(fmt, answer.segments), media_type=timeline_formats.MEDIA_TYPES[fmt])


@router.get("/models", response_model=list[ModelInfo], responses=documented(401, 503))
async def models(classifier: ClassifierDep) -> list[ModelInfo]:
    return [ModelInfo.model_validate(classifier)]
