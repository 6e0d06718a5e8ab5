"""KServe v2 / Triton HTTP protocol: health, model metadata, and `infer` on an
already-decoded tensor, so Triton's clients and perf_analyzer-style tools can drive us.

A ladder of merge ratios is one model per rung (`demo_r038`: the rung's name in ladder.json,
as in the Triton repository) plus the model's own name, whose requests the load policy places."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from service import __version__
from service.app_state import AppStateDep, ClassifierDep, get_classifier
from service.auth import Protected
from service.errors import ApiError, documented
from service.schemas import (
    InferRequest,
    InferResponse,
    ModelMetadataV2,
    ModelReadiness,
    Readiness,
    ServerMetadata,
    TensorOut,
    TensorSpec,
)

TAGS = ["v2 (KServe / Triton)"]
NOT_READY = "the model is still loading, or failed to load"
OTHER_COMMAS = 1024  # beyond the numbers': the shape's, an id's, the outputs'


def most_numbers(classifier) -> int:
    """The numbers in the largest tensor `infer` takes: STTM_MAX_VIEWS clips of [3, T, S, S]."""
    spec = classifier.backend.meta.input_spec
    return classifier.max_views * 3 * spec.frames * spec.size * spec.size


class CountedRequest(Request):
    """A JSON body read as it arrives and refused (413) once its commas say it holds more numbers
    than the largest tensor `infer` takes: FastAPI holds every number it parses as a Python object
    (a 190 MB body of zeros took the server past 22 GB, and the kernel killed it)."""

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            most = most_numbers(get_classifier(self))  # 503 while the model loads: nothing is read
            chunks, commas = [], 0
            async for chunk in self.stream():
                commas += chunk.count(b",")
                if commas > most + OTHER_COMMAS:
                    raise ApiError(413, "too_large", f"the body holds more numbers than the largest input, {most}")
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body


class CountedRoute(APIRoute):
    """FastAPI's way to change how a route reads its body (a custom `Request` in `APIRoute`). The
    body is read before FastAPI's handler, which would turn the 413 into its own 400."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def counted(request: Request) -> Response:
            request = CountedRequest(request.scope, request.receive)
            refuse_before_the_body(request)
            await request.body()  # kept: the handler's read returns it
            return await handler(request)

        return counted


BINARY = (
    "tensor data in binary (the KServe binary extension, Inference-Header-Content-Length) is not supported: "
    "send the v2 JSON format (tritonclient: set_data_from_numpy(..., binary_data=False))"
)


def refuse_before_the_body(request: Request) -> None:
    """A binary body (415), told by its headers before it is read."""
    if "inference-header-content-length" in request.headers:
        raise ApiError(415, "unsupported_media_type", BINARY)


health = APIRouter(prefix="/v2/health", tags=TAGS)  # open: orchestrators probe it without a token
router = APIRouter(prefix="/v2", tags=TAGS, dependencies=Protected)
infer_router = APIRouter(prefix="/v2", tags=TAGS, dependencies=Protected, route_class=CountedRoute)


def _rung(classifier, name: str) -> int | None:
    """The rung a model name pins (None: the model itself, auto); 404 for an unknown name."""
    if classifier is not None:
        if name == classifier.name:
            return None
        for i, rung in enumerate(classifier.rungs):
            if name == rung.name:
                return i
    raise ApiError(404, "not_found", f"unknown model {name!r}")


@router.get("", responses=documented(401))
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="sttm-serve", version=__version__, extensions=[])


@health.get("/live")
async def live() -> dict:
    return {"live": True}


@health.get("/ready", response_model=Readiness, responses={503: {"model": Readiness, "description": NOT_READY}})
async def ready(rt: AppStateDep):
    return JSONResponse(Readiness(ready=rt.ready).model_dump(), status_code=200 if rt.ready else 503)


@router.get("/models/{name}", responses=documented(401, 404, 422, 503))
async def model_metadata(name: str, classifier: ClassifierDep) -> ModelMetadataV2:
    _rung(classifier, name)
    m = classifier.backend.meta
    frames, size = m.input_spec.frames, m.input_spec.size
    video = TensorSpec(name=m.input_name, datatype="FP32", shape=[-1, 3, frames, size, size])
    logits = TensorSpec(name=m.output_name, datatype="FP32", shape=[-1, len(m.labels)])
    platform = platform_of(classifier.backend.provider)
    return ModelMetadataV2(name=name, versions=["1"], platform=platform, inputs=[video], outputs=[logits])


def platform_of(provider: str) -> str:
    """The Triton platform name of the runtime serving the model (`openvino:CPU` -> `openvino`)."""
    kind = provider.split(":", 1)[0]
    return {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan", "torch": "pytorch"}.get(kind, kind)


@router.get(
    "/models/{name}/ready",
    response_model=ModelReadiness,
    responses={**documented(401, 404, 422), 503: {"model": ModelReadiness, "description": NOT_READY}},
)
async def model_ready(name: str, rt: AppStateDep):
    if rt.ready:
        _rung(rt.classifier, name)
    return JSONResponse(ModelReadiness(name=name, ready=rt.ready).model_dump(), status_code=200 if rt.ready else 503)


@infer_router.post(
    "/models/{name}/infer", response_model=InferResponse, responses=documented(400, 401, 404, 408, 413, 415, 422, 503)
)
async def infer(name: str, request: InferRequest, classifier: ClassifierDep) -> InferResponse:
    pinned = _rung(classifier, name)
    m = classifier.backend.meta
    if len(request.inputs) != 1 or request.inputs[0].name != m.input_name:
        raise ApiError(400, "bad_input", f"expected one input named {m.input_name!r}")
    tensor = request.inputs[0]
    expected = [3, m.input_spec.frames, m.input_spec.size, m.input_spec.size]
    if tensor.datatype != "FP32":
        raise ApiError(400, "bad_input", f"datatype must be FP32, got {tensor.datatype}")
    if len(tensor.shape) != 5 or tensor.shape[1:] != expected or not 1 <= tensor.shape[0] <= classifier.max_views:
        raise ApiError(
            400,
            "bad_input",
            f"shape must be [batch, {', '.join(map(str, expected))}] with batch 1 to {classifier.max_views} "
            f"(STTM_MAX_VIEWS), got {tensor.shape}",
        )
    try:
        data = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    except (ValueError, TypeError, OverflowError):  # too few or many, ragged, strings, objects, 10**400
        raise ApiError(400, "bad_input", f"data does not hold {int(np.prod(tensor.shape))} numbers") from None
    if not np.isfinite(data).all():  # the model would answer NaN logits (null in JSON) with a 200
        raise ApiError(400, "bad_input", "data holds NaN or infinity (or numbers beyond float32's range)")
    logits = (await classifier.infer(data, pinned)).logits
    out = TensorOut(name=m.output_name, shape=list(logits.shape), datatype="FP32", data=logits.ravel().tolist())
    return InferResponse(model_name=name, id=request.id, outputs=[out])
