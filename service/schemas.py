"""Typed request options and responses (they are the OpenAPI schema at /docs): they
validate HTTP input into the use case's plain options and render its plain results."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from media import VideoInfo, Views
from service import classify

# A rung of a ladder of merge ratios, by its nominal reduction, or the load policy's choice.
Reduction = Literal["auto"] | Annotated[float, Field(ge=0, lt=1)]
REDUCTION = Field(
    "auto",
    description="a rung's nominal reduction (GET /v1/models: rungs), or 'auto': the "
    "least-merged rung that meets the latency target under the current load",
)


def _rung(reduction: Reduction) -> float | None:
    return None if reduction == "auto" else float(reduction)


class ClassifyQuery(BaseModel):
    """Sampling vocabulary of MMAction2/VideoMAE. `model` uses what the model was trained with."""

    top_k: int = Field(5, ge=1, le=1000)
    sampling: Literal["model", "uniform", "dense"] = "model"
    clip_len: int | None = Field(None, ge=1, le=512, description="must equal the model's frames when given")
    frame_interval: int | None = Field(None, ge=1, le=128, description="dense sampling stride")
    num_clips: int = Field(1, ge=1, le=10, description="clips along time, softmax-averaged")
    crops: int = Field(1, ge=1, le=3, description="1 = centre crop, 3 = ThreeCrop")
    start: float = Field(0.0, ge=0, description="seconds")
    end: float | None = Field(None, gt=0, description="seconds")
    reduction: Reduction = REDUCTION

    @model_validator(mode="after")
    def _window(self) -> ClassifyQuery:
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        if self.crops not in (1, 3):
            raise ValueError("crops must be 1 or 3")
        return self

    def options(self) -> classify.ClassifyOptions:
        views = Views(None if self.sampling == "model" else self.sampling, self.frame_interval, self.num_clips,
                      self.crops, self.start, self.end)  # fmt: skip
        return classify.ClassifyOptions(self.top_k, views, self.clip_len, _rung(self.reduction))


class TimelineQuery(BaseModel):
    top_k: int = Field(3, ge=1, le=1000)
    window_s: float = Field(2.0, gt=0, le=600)
    # at least 10 ms: a finer stride is below any video's frame interval
    stride_s: float = Field(1.0, ge=0.01, le=600, description="seconds")
    reduction: Reduction = REDUCTION

    def options(self) -> classify.TimelineOptions:
        return classify.TimelineOptions(self.top_k, self.window_s, self.stride_s, _rung(self.reduction))


class Prediction(BaseModel):
    label: str
    score: float
    index: int

    @classmethod
    def of(cls, p) -> Prediction:
        return cls(label=p.label, score=p.score, index=p.index)


class VideoMeta(BaseModel):
    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    frames: int

    @classmethod
    def of(cls, info: VideoInfo) -> VideoMeta:
        return cls(duration_s=round(info.duration_s, 3), fps=round(info.fps, 3), width=info.width,
                   height=info.height, codec=info.codec, frames=info.frames)  # fmt: skip


class Latency(BaseModel):
    """Milliseconds per stage."""

    decode: float
    preprocess: float
    queue: float
    inference: float
    total: float

    @classmethod
    def of(cls, latency: classify.Latency) -> Latency:
        return cls(**{stage: round(seconds * 1000, 2) for stage, seconds in asdict(latency).items()})


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction]
    frames: list[int] = Field(description="frame indices used (first clip)")
    views: int
    video: VideoMeta
    latency_ms: Latency
    reduction: float = Field(description="the rung it ran on: its nominal reduction")
    gflops: float = Field(description="that rung's multiply-adds per clip, G")

    @classmethod
    def of(cls, result: classify.Classification) -> ClassifyResponse:
        return cls(model=result.model, predictions=[Prediction.of(p) for p in result.predictions],
                   frames=result.frames, views=result.views, video=VideoMeta.of(result.video),
                   latency_ms=Latency.of(result.latency), reduction=result.reduction,
                   gflops=result.gflops)  # fmt: skip


class Window(BaseModel):
    start_s: float
    end_s: float
    predictions: list[Prediction]


class TimelineResponse(BaseModel):
    model: str
    windows: list[Window]
    video: VideoMeta
    latency_ms: Latency
    reduction: float = Field(description="the rung it ran on: its nominal reduction")
    gflops: float = Field(description="that rung's multiply-adds per clip, G")

    @classmethod
    def of(cls, result: classify.Timeline) -> TimelineResponse:
        windows = [Window(start_s=round(w.start_s, 3), end_s=round(w.end_s, 3),
                          predictions=[Prediction.of(p) for p in w.predictions]) for w in result.windows]  # fmt: skip
        return cls(model=result.model, windows=windows, video=VideoMeta.of(result.video),
                   latency_ms=Latency.of(result.latency), reduction=result.reduction,
                   gflops=result.gflops)  # fmt: skip


class RungInfo(BaseModel):
    reduction: float = Field(description="nominal: the value a request pins with reduction=")
    name: str = Field(description="its KServe v2 model name")
    gflops: float
    backend: str
    precision: str
    measured: dict = Field(description="accuracy and speed measured at export (sttm export --eval-data)")


class ModelInfo(BaseModel):
    name: str
    arch: str
    labels: list[str]
    frames: int
    input_size: int
    mean: list[float]
    std: list[float]
    sampling: str
    frame_interval: int
    merge: str
    reduction: float
    gflops: float
    gflops_unmerged: float
    backend: str
    precision: str
    rungs: list[RungInfo] = Field(description="a ladder of merge ratios, least merged first (one for a single model)")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


# KServe v2 / Triton HTTP protocol
class Readiness(BaseModel):
    ready: bool


class ModelReadiness(BaseModel):
    name: str
    ready: bool


class TensorIn(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float] | list[list] | list


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[TensorIn]
    outputs: list[dict] | None = None


class TensorOut(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferResponse(BaseModel):
    model_name: str
    model_version: str = "1"
    id: str | None = None
    outputs: list[TensorOut]
