"""`create_app(settings)` builds the FastAPI app; heavy resources live in the lifespan."""

from __future__ import annotations

import asyncio
import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__, errors, kserve, routes
from service.backend import Backend, ModelLoadError
from service.batcher import Batcher
from service.errors import error_response
from service.metrics import Metrics
from service.runtime import Runtime
from service.settings import Settings
from service.upload import BodyLimit

OPEN_PATHS = ("/v2/health/", "/docs", "/openapi.json", "/redoc")


def load(runtime: Runtime) -> None:
    """Load the model and warm it up; the app is ready only after this."""
    s = runtime.settings
    backend = Backend.load(s.model, s.providers, s.intra_op_threads, s.max_batch, s.engine_cache)
    backend.warm_up((1, min(2, s.max_batch)))
    runtime.backend = backend

    def on_batch(size: int, seconds: float) -> None:
        runtime.metrics.batch.observe(size)

    runtime.batcher = Batcher(backend, s.max_batch, s.max_wait_ms, s.max_queue, on_batch)
    runtime.batcher.start()
    runtime.ready = True


class OneLineStartupError:
    """ASGI middleware: when the model cannot be loaded, the failed start is reported as that
    one line. (Starlette puts the whole traceback into `lifespan.startup.failed`, which uvicorn
    logs before exiting; other start-up failures keep their traceback.)"""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
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

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime: Runtime = app.state.runtime
        runtime.pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="decode")
        try:
            load(runtime)
        except ModelLoadError as err:
            runtime.load_error = str(err)
            if settings.require_model:
                raise  # the server exits; OneLineStartupError makes the log say why in one line
            # otherwise: stay up, not ready
        yield
        if runtime.batcher:
            await asyncio.wait_for(runtime.batcher.stop(), timeout=30)  # drain in-flight work
        runtime.pool.shutdown(wait=True, cancel_futures=False)

    app = FastAPI(
        title="sttm-serve",
        version=__version__,
        description="Action recognition with video transformers and spatial-temporal token merging.",
        lifespan=lifespan,
    )
    app.state.runtime = Runtime(settings=settings, metrics=Metrics())
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(kserve.router)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        runtime.metrics.queue.set(runtime.batcher.pending_clips if runtime.batcher else 0)
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        runtime: Runtime = request.app.state.runtime
        key = settings.api_key.get_secret_value().encode() if settings.api_key else None
        if key and not request.url.path.startswith(OPEN_PATHS):
            given = request.headers.get("authorization", "")
            token = given[7:].encode() if given.lower().startswith("bearer ") else b""
            if not hmac.compare_digest(token, key):  # constant time
                response = error_response(401, "unauthorized", "a valid bearer token is required",
                                          {"WWW-Authenticate": "Bearer"})  # fmt: skip
                runtime.metrics.requests.labels(request.url.path, "401").inc()
                return response
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

    app.add_middleware(BodyLimit, limit=int(settings.max_upload_mb * (1 << 20)))
    app.add_middleware(OneLineStartupError, runtime=app.state.runtime)
    return app
