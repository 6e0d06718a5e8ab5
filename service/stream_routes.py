"""`/v1/streams`: live streams from a URL (POST/GET/DELETE, Server-Sent Events) and from a
client pushing media over a WebSocket (`/v1/streams/ws`); the registry is `service.streams`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import Headers

from media.container import index_after_media
from media.stream import Pipe
from service.app_state import AppState, AppStateDep, ClassifierDep
from service.auth import HOW, Protected, key_in_url, refusal
from service.errors import ApiError, describe, documented
from service.schemas import StreamInfo, StreamOptions, StreamRequest
from service.sources import check_request
from service.streams import Stream, Streams
from service.upload import JSON_BYTES

router = APIRouter(prefix="/v1/streams", tags=["streams"])
TEXT = {"type": "string"}
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing a quiet connection
PIPE_BYTES = 8 << 20  # media a client may have in flight before its writes wait


def get_streams(runtime: AppStateDep) -> Streams:
    if runtime.streams is None:
        raise ApiError(503, "not_ready", runtime.load_error or "the model is still loading", retry_after=1)
    return runtime.streams


StreamsDep = Annotated[Streams, Depends(get_streams)]


@router.post(
    "",
    status_code=201,
    response_model=StreamInfo,
    dependencies=Protected,
    responses=documented(400, 401, 403, 408, 413, 422, 429, 501, 503),  # 408, 413: BodyLimit
)
async def create(body: StreamRequest, rt: AppStateDep, classifier: ClassifierDep, streams: StreamsDep) -> StreamInfo:
    """Start classifying a live source: RTSP, HLS or an HTTP(S) file. Its host must be allowed
    by `STTM_STREAM_ALLOW` (403 here); every later fetch (redirects, the URLs a playlist names)
    is checked as it is made, and a refused one ends the stream with the host and the rule."""
    if rt.settings.workers > 1:  # its events, status and delete would reach the other processes too
        raise ApiError(
            501,
            "unsupported",
            f"URL streams need a server of one process (sttm serve --workers 1; this one runs {rt.settings.workers}): "
            "a stream lives in the process that started it; a WebSocket push (/v1/streams/ws) works",
        )
    await asyncio.to_thread(check_request, body.url, streams.allow, streams.resolver)
    return StreamInfo.model_validate(streams.start(classifier, body.url, body.options()))


@router.get("", response_model=list[StreamInfo], dependencies=Protected, responses=documented(401, 503))
async def list_streams(streams: StreamsDep) -> list[StreamInfo]:
    return [StreamInfo.model_validate(s) for s in streams.list()]


@router.get("/{sid}", response_model=StreamInfo, dependencies=Protected, responses=documented(401, 404, 422, 503))
async def get_stream(sid: str, streams: StreamsDep) -> StreamInfo:
    return StreamInfo.model_validate(streams.get(sid))


@router.delete("/{sid}", status_code=204, dependencies=Protected, responses=documented(401, 404, 422, 503))
async def delete_stream(sid: str, streams: StreamsDep) -> Response:
    await streams.delete(sid)
    return Response(status_code=204)


EVENT_ID_DIGITS = 18  # an event id of ours fits in 63 bits


def resume_after(last_event_id: str | None) -> int:
    """The event a reconnecting client saw last (`Last-Event-ID`); 0, from the first, for none or for
    one that is not an id of ours. ASCII digits only: `str.isdigit` also takes `²`, which `int` refuses,
    and `int` refuses more than 4300 digits (each was a 500)."""
    value = last_event_id or ""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= EVENT_ID_DIGITS else 0


@router.get(
    "/{sid}/events",
    dependencies=Protected,
    responses={**documented(401, 404, 422, 503), 200: {"content": {"text/event-stream": {"schema": TEXT}}}},
)
async def events(
    sid: str, rt: AppStateDep, streams: StreamsDep, last_event_id: Annotated[str | None, Header()] = None
) -> StreamingResponse:
    """Server-Sent Events: `window`, `segment`, `end` (and `started`), each with an `id:`; a
    late subscriber gets the kept events from the first (or after `Last-Event-ID`)."""
    stream = streams.get(sid)
    after = resume_after(last_event_id)

    async def body():
        async for event in stream.log.follow(after, KEEPALIVE_S):
            if event is None:
                yield ": keep-alive\n\n"
                continue
            rt.metrics.stream_events.labels(event.name).inc()
            yield f"id: {event.id}\nevent: {event.name}\ndata: {json.dumps(event.data)}\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


async def _first_message(ws: WebSocket, runtime: AppState) -> str | None:
    """Authenticate, and return the first message that is not the key (the options), or None
    when the socket was refused. A key comes in a header (`Authorization: Bearer`,
    `X-API-Key`) or, where the client cannot set one (a browser), as the first message
    `{"type": "auth", "key": ...}`; `?key=` in the URL is refused with how to send it."""
    timeout = runtime.settings.stream_stall_s
    reason = "key_in_url" if key_in_url(ws.query_params) else None
    if reason is None:
        first = _small(await asyncio.wait_for(ws.receive_text(), timeout))
        sent = _auth_message(first)
        if sent is not None:
            first = _small(await asyncio.wait_for(ws.receive_text(), timeout))
        headers = ws.headers if sent is None else Headers({**ws.headers, "authorization": f"Bearer {sent}"})
        reason = refusal(runtime, headers, ws.query_params)
    else:
        runtime.metrics.auth_refused.labels(reason).inc()
    if reason is None:
        return first
    message = (
        f"a key in the URL is refused: {HOW}" if reason == "key_in_url" else (f"a valid API key is required: {HOW}")
    )
    await _refuse(ws, "unauthorized", message, close_code=1008)
    return None


def _small(text: str) -> str:
    """A JSON message (the key, the options) of at most `JSON_BYTES`, before it is parsed: parsed,
    a 16 MiB one of numbers (the WebSocket's limit) held ~480 MB."""
    if len(text) > JSON_BYTES:
        raise ApiError(413, "too_large", f"a JSON message is at most {JSON_BYTES} bytes, this one {len(text)}")
    return text


def _json_object(text: str) -> dict | None:
    """A text message as a JSON object, else None (not JSON, another value, or nested deeper than
    `json.loads` recurses: its RecursionError is a RuntimeError, which the receiver took for a
    disconnect)."""
    with contextlib.suppress(ValueError, RecursionError):
        message = json.loads(text)
        return message if isinstance(message, dict) else None
    return None


def _auth_message(text: str) -> str | None:
    """The key of a `{"type": "auth", "key": ...}` message, else None."""
    message = _json_object(text)
    return str(message.get("key") or "") if message is not None and message.get("type") == "auth" else None


async def _refuse(ws: WebSocket, code: str, message: str, close_code: int = 1000) -> None:
    with contextlib.suppress(Exception):
        await ws.send_json({"event": "error", "data": {"code": code, "message": message}})
        await ws.send_json({"event": "end", "data": {"reason": message}})
        await ws.close(close_code)


@router.websocket("/ws")
async def push(ws: WebSocket) -> None:
    """Client push: the key first where the client cannot send a header (`{"type": "auth",
    "key": ...}`), then the options as JSON text; then binary media chunks as a MediaRecorder
    emits them (WebM/Matroska or fragmented MP4); `{"type": "end"}` when done. The server sends
    `{"event", "data"}` messages with the SSE events' payloads."""
    runtime: AppState = ws.app.state.runtime
    await ws.accept()
    s = runtime.settings
    try:
        first = await _first_message(ws, runtime)
        if first is None:
            return
        if _is_end(first):  # the options are optional: an end in their place is an end before any media
            return await _refuse(ws, "empty", NO_MEDIA)
        if runtime.classifier is None or runtime.streams is None:
            return await _refuse(ws, "not_ready", runtime.load_error or "the model is still loading")
        opts = StreamOptions.model_validate_json(first)
    except ApiError as err:
        return await _refuse(ws, err.code, err.message)
    except ValidationError as err:
        return await _refuse(ws, "invalid_request", describe(err.errors(), whole="message"))
    except (TimeoutError, KeyError, WebSocketDisconnect, RuntimeError):
        return await _refuse(ws, "invalid_request", "the first message must be the options as JSON text")
    pipe = Pipe(PIPE_BYTES, s.stream_stall_s)
    try:
        stream = runtime.streams.start(runtime.classifier, None, opts.options(), pipe)
    except ApiError as err:
        return await _refuse(ws, err.code, err.message)
    receiver = asyncio.create_task(_receive(ws, pipe, stream, runtime.streams))
    try:
        async for event in stream.log.follow():
            await ws.send_json({"event": event.name, "data": event.data})
            runtime.metrics.stream_events.labels(event.name).inc()
        await ws.close()
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away: the receiver stops the stream
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await receiver
        if stream.state in ("starting", "running", "retrying"):
            await runtime.streams.stop(stream, "client closed")


NOT_END = 'after the options, a text message must be {"type": "end"} (the media goes in binary messages)'


def _is_end(text: str) -> bool:
    message = _json_object(text)
    return message is not None and message.get("type") == "end"


PUSH_MP4 = (
    "the MP4's index (moov) comes after its media, so it cannot be decoded as it arrives: push WebM or a "
    "fragmented MP4 (a MediaRecorder's chunks; ffmpeg -i IN -c copy -movflags frag_keyframe+empty_moov OUT)"
)
NO_MEDIA = 'the client sent {"type": "end"} before any media'
HEAD_BYTES = 64 << 10  # enough of the first bytes to find an MP4's first moov, moof or mdat


def push_refusal(head: bytes, ended: bool) -> tuple[str, str] | None:
    """Why the first bytes of a push (`head`, and whether the client has ended) cannot make a
    stream, as (code, message); None while they may."""
    if ended and not head:
        return "empty", NO_MEDIA
    if index_after_media(head):
        return "unsupported", PUSH_MP4
    return None


async def _receive(ws: WebSocket, pipe: Pipe, stream: Stream, streams: Streams) -> None:
    """Media chunks into the pipe (waiting while it is full), until `end` or a disconnect; any
    other text message ends the stream (`invalid_request`), as do no media before `end` (`empty`)
    and an MP4 whose index follows its media (`unsupported`: the decoder would wait for the end)."""
    head = b""
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            data, text = message.get("bytes"), message.get("text")
            ended = text is not None and _is_end(text)
            if len(head) < HEAD_BYTES and (data or ended):
                head += (data or b"")[: HEAD_BYTES - len(head)]
                refused = push_refusal(head, ended)
                if refused is not None:
                    stream.log.append("error", {"code": refused[0], "message": refused[1]})
                    await streams.stop(stream, f"{refused[0]}: {refused[1]}")
                    return
            if data:
                await asyncio.to_thread(pipe.write, data)
            elif text is not None:
                if ended:
                    pipe.close()
                    return
                stream.log.append("error", {"code": "invalid_request", "message": NOT_END})
                await streams.stop(stream, f"invalid_request: {NOT_END}")
                return
    except (TimeoutError, BrokenPipeError, WebSocketDisconnect, RuntimeError):
        pass
    pipe.close()
    if stream.state in ("starting", "running", "retrying"):
        await streams.stop(stream, "client closed")
