"""Typed request options and responses (they are the OpenAPI schema at /docs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class ClassifyOptions(BaseModel):
    """Sampling vocabulary of MMAction2/VideoMAE. `model` uses what the model was trained with."""

    top_k: int = Field(5, ge=1, le=1000)
    sampling: Literal["model", "uniform", "dense"] = "model"
    clip_len: int | None = Field(None, ge=1, le=512, description="must equal the model's frames when given")
    frame_interval: int | None = Field(None, ge=1, le=128, description="dense sampling stride")
    num_clips: int = Field(1, ge=1, le=10, description="clips along time, softmax-averaged")
    crops: int = Field(1, ge=1, le=3, description="1 = centre crop, 3 = ThreeCrop")
    start: float = Field(0.0, ge=0, description="seconds")
    end: float | None = Field(None, gt=0, description="seconds")

    @model_validator(mode="after")
    def _window(self) -> ClassifyOptions:
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        if self.crops not in (1, 3):
            raise ValueError("crops must be 1 or 3")
        return self


class TimelineOptions(BaseModel):
    top_k: int = Field(3, ge=1, le=1000)
    window_s: float = Field(2.0, gt=0, le=600)
    # at least 10 ms: a finer stride is below any video's frame interval
    stride_s: float = Field(1.0, ge=0.01, le=600, description="seconds")


class Prediction(BaseModel):
    label: str
    score: float
    index: int


class VideoMeta(BaseModel):
    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    frames: int


class Latency(BaseModel):
    decode: float
    preprocess: float
    queue: float
    inference: float
    total: float


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction]
    frames: list[int] = Field(description="frame indices used (first clip)")
    views: int
    video: VideoMeta
    latency_ms: Latency


class Window(BaseModel):
    start_s: float
    end_s: float
    predictions: list[Prediction]


class TimelineResponse(BaseModel):
    model: str
    windows: list[Window]
    video: VideoMeta
    latency_ms: Latency


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
