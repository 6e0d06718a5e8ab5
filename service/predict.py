"""`sttm predict`: the classify use case, locally, without a server — the same decoding,
batching and answer as `/v1/classify` (each result is that route's JSON plus the path)."""

from __future__ import annotations

import asyncio

from media import VideoError
from service import formats
from service.classify import ClassifyOptions, TimelineOptions, open_classifier
from service.schemas import ClassifyResponse, TimelineResponse
from service.settings import Settings


async def _predict(settings: Settings, videos: list[str], opts: ClassifyOptions) -> list[dict]:
    results = []
    async with open_classifier(settings) as classifier:
        for video in videos:
            try:
                answer = ClassifyResponse.of(await classifier.classify(video, opts)).model_dump()
            except (VideoError, OSError) as err:
                answer = {"error": {"code": getattr(err, "code", "io_error"), "message": str(err)}}
            results.append({"path": video, **answer})
    return results


def predict(model: str, videos: list[str], top_k: int = 5, **settings) -> list[dict]:
    """One result per video: `/v1/classify`'s answer, or `{"error": {"code", "message"}}`.
    `settings`: any other `Settings` field (e.g. `backend`, `precision`); the rest come from
    `STTM_*` variables, as for the server."""
    return asyncio.run(_predict(Settings(model=model, **settings), videos, ClassifyOptions(top_k=top_k)))


async def _timeline(settings: Settings, video: str, opts: TimelineOptions) -> TimelineResponse:
    async with open_classifier(settings) as classifier:
        return TimelineResponse.of(await classifier.timeline(video, opts))


def timeline(model: str, video: str, opts: TimelineOptions, fmt: str = "json", **settings) -> str:
    """`/v1/timeline`'s answer for one video, as JSON, WebVTT or CSV text. Raises VideoError."""
    answer = asyncio.run(_timeline(Settings(model=model, **settings), video, opts))
    return answer.model_dump_json(indent=2) if fmt == "json" else formats.render(fmt, answer.segments)
