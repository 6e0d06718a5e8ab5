"""Every error is JSON `{"error": {"code", "message"}}` with a fitting status."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from media import VideoError
from service.batcher import QueueFullError
from service.schemas import ErrorBody

# VideoError codes -> HTTP status
VIDEO_STATUS = {"bad_option": 422, "too_many_windows": 422}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


def documented(*statuses: int) -> dict:
    """OpenAPI `responses` for error statuses: each is an `ErrorBody` (this replaces FastAPI's
    default 422 schema, which is not what the handlers below send)."""
    return {status: {"model": ErrorBody} for status in statuses}


def describe(errors: list[dict], whole: str = "") -> str:
    """Pydantic's errors as one line of `where: what` (`whole` names an error of the whole
    input); a name the request may not carry (a misspelt option) says so."""
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":  # FastAPI locates it at character 0 of the body
            parts.append(f"the {whole or 'body'} is not JSON ({err.get('ctx', {}).get('error', 'JSON decode error')})")
            continue
        if tuple(err.get("loc", ())) == ("body",) and err.get("type") in ("model_attributes_type", "dict_type"):
            parts.append("the body must be a JSON object (Content-Type: application/json)")
            continue
        if tuple(err.get("loc", ())) == ("body",) and err.get("type") == "missing":  # was the bare "Field required"
            parts.append("the request has no body: send a JSON object (Content-Type: application/json)")
            continue
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body")) or whole
        # a validator's own words, without the "Value error, " pydantic puts first (as cli.main does)
        msg = str(err.get("msg")).removeprefix("Value error, ")
        what = "not an option here" if err.get("type") == "extra_forbidden" else msg
        parts.append(f"{where}: {what}" if where else what)
    return "; ".join(parts) or "invalid request"


METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(routes, scope: dict) -> str:
    """The `Allow` of a 405: each method some route on the path takes in full. Starlette names the
    first such route's alone (`PUT /v1/streams`: `POST`, not `GET, POST`)."""
    takes = [m for m in METHODS if any(r.matches({**scope, "method": m})[0] == Match.FULL for r in routes)]
    return ", ".join(takes)


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, err: ApiError):
        headers = {"Retry-After": str(err.retry_after)} if err.retry_after else None
        if err.status == 401:
            headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
        return error_response(err.status, err.code, err.message, headers)

    @app.exception_handler(QueueFullError)
    async def _overloaded(request: Request, err: QueueFullError):
        request.app.state.runtime.metrics.rejected.labels(err.reason).inc()
        return error_response(503, "overloaded", str(err), {"Retry-After": str(err.retry_after_s)})

    @app.exception_handler(VideoError)
    async def _video(request: Request, err: VideoError):
        return error_response(VIDEO_STATUS.get(err.code, 422), err.code, str(err))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError):
        return error_response(422, "invalid_request", describe(err.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException):
        codes = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        code = codes.get(err.status_code, "http_error")  # 400: Starlette's multipart parser (no boundary, two files)
        headers = err.headers  # a 405's `Allow` (RFC 9110), here naming every route on the path
        if err.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request.app.router.routes, request.scope)}
        return error_response(err.status_code, code, str(err.detail), headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        return error_response(500, "internal", f"{type(err).__name__}: {str(err)[:200]}")
