"""What the app holds for its lifetime: settings, metrics, and the classifier once loaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.classify import Classifier
from service.errors import ApiError
from service.keys import KeyRing
from service.metrics import Metrics
from service.settings import Settings
from service.streams import Streams


@dataclass
class AppState:
    settings: Settings
    metrics: Metrics
    keys: KeyRing
    classifier: Classifier | None = None  # set once the model is loaded and warmed up
    streams: Streams | None = None  # live streams (set with the classifier)
    load_error: str | None = None

    @property
    def ready(self) -> bool:
        return self.classifier is not None


def get_app_state(request: Request) -> AppState:
    return request.app.state.runtime


def get_classifier(request: Request) -> Classifier:
    runtime = get_app_state(request)
    if runtime.classifier is None:
        raise ApiError(503, "not_ready", runtime.load_error or "the model is still loading", retry_after=1)
    return runtime.classifier


AppStateDep = Annotated[AppState, Depends(get_app_state)]
ClassifierDep = Annotated[Classifier, Depends(get_classifier)]
