"""`create_app(settings)` builds the FastAPI app; the model and its batcher live in the lifespan."""

from __future__ import annotations

import logging
import time
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.backends import ModelLoadError
from service import __version__, errors, kserve, routes, stream_routes, web
from service.app_state import AppState
from service.auth import Protected, redact_server_logs
from service.keys import KeyRing, open_to_others, reload_keys_on_sighup
from service.lifecycle import open_classifier
from service.metrics import Metrics
from service.settings import Settings
from service.streams import Streams
from service.upload import BodyLimit

log = logging.getLogger("uvicorn.error")  # beside uvicorn's own start-up lines, in its format


class OneLineStartupError:
    """ASGI middleware: when the model cannot be loaded, the failed start is reported as that
    one line. (Starlette puts the whole traceback into `lifespan.startup.failed`, which uvicorn
    logs before exiting; other start-up failures keep their traceback.)"""

    def __init__(self, app: ASGIApp, runtime: AppState) -> None:
        self.app, self.runtime = app, runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def one_line(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and self.runtime.load_error:
                message = {**message, "message": f"model not loaded: {self.runtime.load_error}"}
            await send(message)

        await self.app(scope, receive, one_line)


def _route_path(request: Request) -> str:
    """The matched route's template (`/v2/models/{name}`), known once routing has run."""
    return getattr(request.scope.get("route"), "path", "unmatched")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(
        title="sttm-serve",
        version=__version__,
        description="Action recognition with video transformers and spatial-temporal token merging.",
        lifespan=_lifespan(settings),
    )
    key = settings.api_key.get_secret_value() if settings.api_key else None
    app.state.runtime = AppState(settings=settings, metrics=Metrics(), keys=KeyRing(key, settings.api_keys_file))
    redact_server_logs()
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(stream_routes.router)
    app.include_router(kserve.health)
    app.include_router(kserve.router)
    app.include_router(kserve.infer_router)
    web.install(app)
    app.add_api_route("/metrics", _metrics, include_in_schema=False, dependencies=Protected)
    app.middleware("http")(_observe)
    app.add_middleware(BodyLimit, limit=int(settings.max_upload_mb * (1 << 20)), timeout_s=settings.read_timeout_s)
    app.add_middleware(OneLineStartupError, runtime=app.state.runtime)
    return app


def _lifespan(settings: Settings):
    """The model loaded once, streams beside it; on exit streams end, then the batcher drains."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime: AppState = app.state.runtime
        async with AsyncExitStack() as stack:
            stack.enter_context(reload_keys_on_sighup(runtime.keys))
            if open_to_others(settings.host, runtime.keys):
                log.warning(
                    "listening on %s with no API key: whoever reaches it may classify and start streams "
                    "(STTM_API_KEY or STTM_API_KEYS_FILE; docs/security.md)",
                    settings.host,
                )
            try:
                on_batch = runtime.metrics.observe_batch
                runtime.classifier = await stack.enter_async_context(open_classifier(settings, on_batch))
                runtime.streams = Streams(settings, runtime.metrics)
                stack.push_async_callback(runtime.streams.close)  # streams end before the batcher drains
            except ModelLoadError as err:
                runtime.load_error = str(err)
                if settings.require_model:
                    raise  # the server exits; OneLineStartupError makes the log say why in one line
                # otherwise: stay up, not ready
            yield  # on exit: the batcher drains in-flight work, then stops

    return lifespan


async def _metrics(request: Request) -> Response:
    runtime: AppState = request.app.state.runtime
    runtime.metrics.queue.set(runtime.classifier.batcher.pending_clips if runtime.classifier else 0)
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _observe(request: Request, call_next):
    """Requests by route and status, in flight, and the time each took."""
    runtime: AppState = request.app.state.runtime
    runtime.metrics.inflight.inc()
    started = time.perf_counter()
    try:
        response = await call_next(request)
    except Exception:  # unhandled: the outermost handler answers 500 (errors.py); count it here
        runtime.metrics.requests.labels(_route_path(request), "500").inc()
        raise
    finally:
        runtime.metrics.inflight.dec()
    runtime.metrics.requests.labels(_route_path(request), str(response.status_code)).inc()
    response.headers["X-Process-Time-Ms"] = f"{(time.perf_counter() - started) * 1000:.1f}"
    return response
