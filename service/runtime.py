"""What the app holds for its lifetime: the model, the batcher, the decode pool, metrics."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from models.video import Limits
from service.backend import Backend
from service.batcher import Batcher
from service.errors import ApiError
from service.metrics import Metrics
from service.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    backend: Backend | None = None
    batcher: Batcher | None = None
    pool: ThreadPoolExecutor | None = None
    ready: bool = False
    load_error: str | None = None
    tasks: set = field(default_factory=set)

    @property
    def limits(self) -> Limits:
        return self.settings.limits

    async def in_pool(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_ready_runtime(request: Request) -> Runtime:
    runtime = get_runtime(request)
    if not runtime.ready:
        raise ApiError(503, "not_ready", runtime.load_error or "the model is still loading", retry_after=1)
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ReadyDep = Annotated[Runtime, Depends(get_ready_runtime)]
