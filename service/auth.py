"""API-key auth as a FastAPI security dependency, applied per router (health stays open).

With a key configured (`STTM_API_KEY`, `STTM_API_KEYS_FILE`: `service.keys`), every protected
route needs `Authorization: Bearer <key>` or `X-API-Key: <key>`; without one, nothing is
required. A key never travels in a URL: a request with `?key=` (or `api_key`, `token`,
`access_token`) is refused with a message that says where the key goes, and the server's logs
show such a query's value as `[redacted]` (`RedactKeys`). Refusals are counted by reason
(`sttm_auth_refused_total{reason}`: missing, invalid, key_in_url), never by key. The schemes
show in the OpenAPI schema (`/docs` has an Authorize button).
"""

from __future__ import annotations

import logging
import re
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers, QueryParams

from service.errors import ApiError

URL_KEYS = ("key", "api_key", "apikey", "token", "access_token")
HOW = (
    "a key goes in an `Authorization: Bearer <key>` or `X-API-Key: <key>` header (a browser's WebSocket: "
    'a first message {"type": "auth", "key": "<key>"}), never in the URL'
)
bearer = HTTPBearer(auto_error=False, description="one of the server's API keys (required only when keys are set)")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key, another header")


def presented_key(headers: Headers) -> str | None:
    """The key a client sent in a header, or None."""
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key")


def key_in_url(query: QueryParams) -> bool:
    return any(name in query for name in URL_KEYS)


def refusal(runtime, headers: Headers, query: QueryParams) -> str | None:
    """Why a request may not pass (`missing`, `invalid`, `key_in_url`), or None; counted. A key
    in the URL is refused even where no key is needed: it leaked already, and it must stop."""
    keys, key = runtime.keys, presented_key(headers)
    reason = "key_in_url" if key_in_url(query) else None
    if reason is None and keys.required:
        reason = "missing" if key is None else None if keys.valid(key) else "invalid"
    if reason:
        runtime.metrics.auth_refused.labels(reason).inc()
    return reason


async def require_token(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    _header: Annotated[str | None, Depends(api_key_header)],
) -> None:
    reason = refusal(request.app.state.runtime, request.headers, request.query_params)
    if reason == "key_in_url":
        raise ApiError(401, "unauthorized", f"a key in the URL is refused: {HOW}")
    if reason:
        raise ApiError(401, "unauthorized", "a valid API key is required (Authorization: Bearer, or X-API-Key)")


Protected = [Depends(require_token)]  # `dependencies=` of a router or route


class RedactKeys(logging.Filter):
    """Rewrites `?key=...` (and the other `URL_KEYS`) in a log record's arguments to `[redacted]`."""

    pattern = re.compile(rf"([?&](?:{'|'.join(URL_KEYS)})=)[^&\s\"]*", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self.pattern.sub(r"\1[redacted]", a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = self.pattern.sub(r"\1[redacted]", record.msg)
        return True


def redact_server_logs() -> None:
    """Install `RedactKeys` on uvicorn's loggers (once)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactKeys) for f in logger.filters):
            logger.addFilter(RedactKeys())
