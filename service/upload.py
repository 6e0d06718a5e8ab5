"""Request bodies: a multipart `file` part or a raw `video/*` body, spooled to memory then
to an anonymous temporary file (never a fixed path; gone when closed). Size is enforced
while streaming by `BodyLimit`, before the whole body has arrived."""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import asynccontextmanager
from typing import BinaryIO

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError, error_response

SPOOL_BYTES = 8 << 20
RAW_TYPES = ("video/", "application/octet-stream")
# a JSON body (a stream's URL and options) is small; parsed, each number in one costs ~60 bytes, so
# a 200 MB one took gigabytes. KServe's infer takes tensors: its route counts their numbers instead
JSON_BYTES = 64 << 10


def body_limit(path: str, headers: dict[bytes, bytes], upload_limit: int) -> int:
    """The most bytes a request's body may hold: `JSON_BYTES` for JSON but KServe's infer, else
    the upload limit."""
    ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    is_json = ctype == b"application/json" or ctype.endswith(b"+json")
    return JSON_BYTES if is_json and not path.endswith("/infer") else upload_limit


class _TooLargeError(Exception):
    pass


class _ReadTimeoutError(Exception):
    pass


def _body_error(err: BaseException) -> type | None:
    """`_TooLargeError` or `_ReadTimeoutError` when `err` is one (or a group holding one)."""
    if isinstance(err, _TooLargeError | _ReadTimeoutError):
        return type(err)
    return next(filter(None, map(_body_error, getattr(err, "exceptions", ()))), None)  # an ExceptionGroup


class BodyLimit:
    """ASGI middleware: 413 as soon as a body exceeds `limit` bytes (`JSON_BYTES` for a JSON body
    but KServe's infer; by header or stream), and
    408 when the body has not fully arrived `timeout_s` after the request began (a client
    trickling bytes holds nothing for longer). Once the body is complete, nothing is timed:
    a long response (Server-Sent Events) may wait for the client's disconnect as long as it likes."""

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float = 60.0) -> None:
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        limit = body_limit(scope["path"], headers, self.limit)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._reject(
                scope, receive, send, 413, "too_large", f"the body is over the limit of {limit} bytes"
            )
        seen = 0
        started = False
        complete = False
        deadline = asyncio.get_running_loop().time() + self.timeout_s

        async def counting_receive() -> Message:
            nonlocal seen, complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except TimeoutError:
                raise _ReadTimeoutError from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > limit:
                    raise _TooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception as err:  # raised in receive, maybe inside a task group (an ExceptionGroup)
            cut = _body_error(err)
            if cut is None:
                raise
            if not started and cut is _TooLargeError:
                await self._reject(
                    scope, receive, send, 413, "too_large", f"the body is over the limit of {limit} bytes"
                )
            elif not started:
                message = f"the body did not arrive within {self.timeout_s:.0f} s (STTM_READ_TIMEOUT_S)"
                await self._reject(scope, receive, send, 408, "read_timeout", message)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, status: int, code: str, message: str) -> None:
        response = error_response(status, code, message)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


@asynccontextmanager
async def video_body(request: Request):
    """Yields `(file, form_fields)`; the file is closed (and its spool deleted) afterwards."""
    ctype = request.headers.get("content-type", "").lower()
    form = None
    spool: BinaryIO | None = None
    try:
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=32)
            part = form.get("file")
            if not isinstance(part, UploadFile):
                raise ApiError(400, "missing_file", "multipart body needs a 'file' part with the video")
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            file = part.file
        elif not ctype or ctype.startswith(RAW_TYPES):
            spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed in finally
            async for chunk in request.stream():
                spool.write(chunk)
            fields, file = {}, spool
        else:
            raise ApiError(415, "unsupported_media_type", f"send multipart/form-data or video/*, not {ctype}")
        size = file.seek(0, 2)
        if size == 0:
            raise ApiError(400, "empty_body", "the request has no video data")
        file.seek(0)
        yield file, fields
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client went away during the upload") from None
    finally:
        if spool is not None:
            spool.close()
        if form is not None:
            await form.close()
