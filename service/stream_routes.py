"""`/v1/streams`: live streams from a URL (POST/GET/DELETE, Server-Sent Events) and from a
client pushing media over a WebSocket (`/v1/streams/ws`); the registry is `service.streams`."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from media.stream import Pipe
from service.app_state import AppState, AppStateDep, ClassifierDep
from service.auth import Protected
from service.errors import ApiError, documented
from service.schemas import StreamInfo, StreamOptions, StreamRequest
from service.sources import AllowList, resolve
from service.streams import Stream, Streams

router = APIRouter(prefix="/v1/streams", tags=["streams"])
KEEPALIVE_S = 15.0  # an SSE comment this often keeps proxies from closing a quiet connection
PIPE_BYTES = 8 << 20  # media a client may have in flight before its writes wait


def get_streams(runtime: AppStateDep) -> Streams:
    if runtime.streams is None:
        raise ApiError(503, "not_ready", runtime.load_error or "the model is still loading", retry_after=1)
    return runtime.streams


StreamsDep = Annotated[Streams, Depends(get_streams)]


@router.post("", status_code=201, response_model=StreamInfo, dependencies=Protected,
             responses=documented(400, 401, 403, 422, 429, 503))  # fmt: skip
async def create(body: StreamRequest, rt: AppStateDep, classifier: ClassifierDep, streams: StreamsDep) -> StreamInfo:
    """Start classifying a live source: RTSP, HLS or an HTTP(S) file. Its host must be in
    `STTM_STREAM_ALLOW`; redirects are followed here and each hop re-checked."""
    allow = AllowList.parse(rt.settings.stream_allow)
    url = await asyncio.to_thread(resolve, body.url, allow, rt.settings.stream_stall_s)
    return StreamInfo.model_validate(streams.start(classifier, url, body.options()))


@router.get("", response_model=list[StreamInfo], dependencies=Protected, responses=documented(401, 503))
async def list_streams(streams: StreamsDep) -> list[StreamInfo]:
    return [StreamInfo.model_validate(s) for s in streams.list()]


@router.get("/{sid}", response_model=StreamInfo, dependencies=Protected, responses=documented(401, 404, 503))
async def get_stream(sid: str, streams: StreamsDep) -> StreamInfo:
    return StreamInfo.model_validate(streams.get(sid))


@router.delete("/{sid}", status_code=204, dependencies=Protected, responses=documented(401, 404, 503))
async def delete_stream(sid: str, streams: StreamsDep) -> Response:
    await streams.delete(sid)
    return Response(status_code=204)


@router.get("/{sid}/events", dependencies=Protected, responses={**documented(401, 404, 503),
            200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}})  # fmt: skip
async def events(
    sid: str, rt: AppStateDep, streams: StreamsDep, last_event_id: Annotated[str | None, Header()] = None
) -> StreamingResponse:
    """Server-Sent Events: `window`, `segment`, `end` (and `started`), each with an `id:`; a
    late subscriber gets the kept events from the first (or after `Last-Event-ID`)."""
    stream = streams.get(sid)
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0

    async def body():
        async for event in stream.log.follow(after, KEEPALIVE_S):
            if event is None:
                yield ": keep-alive\n\n"
                continue
            rt.metrics.stream_events.labels(event.name).inc()
            yield f"id: {event.id}\nevent: {event.name}\ndata: {json.dumps(event.data)}\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


def _ws_authorized(ws: WebSocket, runtime: AppState) -> bool:
    """`?key=` (browsers cannot set headers on a WebSocket) or `Authorization: Bearer`."""
    key = runtime.settings.api_key
    if key is None:
        return True
    auth = ws.headers.get("authorization", "")
    token = ws.query_params.get("key") or (auth[7:] if auth.lower().startswith("bearer ") else "")
    return hmac.compare_digest(token.encode(), key.get_secret_value().encode())


async def _refuse(ws: WebSocket, code: str, message: str) -> None:
    with contextlib.suppress(Exception):
        await ws.send_json({"event": "error", "data": {"code": code, "message": message}})
        await ws.send_json({"event": "end", "data": {"reason": message}})
        await ws.close()


@router.websocket("/ws")
async def push(ws: WebSocket) -> None:
    """Client push: the first message is the options as JSON text; then binary media chunks
    as a MediaRecorder emits them (WebM/Matroska or fragmented MP4); `{"type": "end"}` when
    done. The server sends `{"event", "data"}` messages with the SSE events' payloads."""
    runtime: AppState = ws.app.state.runtime
    if not _ws_authorized(ws, runtime):
        await ws.close(code=1008, reason="a valid key is required")
        return
    await ws.accept()
    if runtime.classifier is None or runtime.streams is None:
        return await _refuse(ws, "not_ready", runtime.load_error or "the model is still loading")
    s = runtime.settings
    try:
        opts = StreamOptions.model_validate_json(await asyncio.wait_for(ws.receive_text(), s.stream_stall_s))
    except ValidationError as err:
        msg = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in err.errors())
        return await _refuse(ws, "invalid_request", msg)
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


async def _receive(ws: WebSocket, pipe: Pipe, stream: Stream, streams: Streams) -> None:
    """Media chunks into the pipe (waiting while it is full), until `end` or a disconnect."""
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes"):
                await asyncio.to_thread(pipe.write, message["bytes"])
            elif message.get("text"):
                with contextlib.suppress(ValueError):
                    if json.loads(message["text"]).get("type") == "end":
                        pipe.close()
                        return
    except (TimeoutError, BrokenPipeError, WebSocketDisconnect, RuntimeError):
        pass
    pipe.close()
    if stream.state in ("starting", "running", "retrying"):
        await streams.stop(stream, "client closed")
