"""Typed request options and responses (they are the OpenAPI schema at /docs): they
validate HTTP input into the use case's plain options and render its plain results."""

from __future__ import annotations

import base64
from dataclasses import asdict
from typing import Annotated, Literal

import numpy as np
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
    explain: bool = Field(False, description="also return `merges`: the merged token of every patch")
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
        return classify.ClassifyOptions(self.top_k, views, self.clip_len, explain=self.explain,
                                        reduction=_rung(self.reduction))  # fmt: skip


class TimelineQuery(BaseModel):
    top_k: int = Field(3, ge=1, le=1000)
    window_s: float = Field(2.0, gt=0, le=600)
    # at least 10 ms: a finer stride is below any video's frame interval
    stride_s: float = Field(1.0, ge=0.01, le=600, description="seconds")
    min_score: float = Field(0.0, ge=0, le=1, description="a window whose top score is under it is 'no action'")
    min_windows: int = Field(2, ge=1, le=100, description="segment hysteresis: windows a new label must hold")
    format: Literal["json", "vtt", "csv"] | None = Field(None, description="default: from Accept, else json")
    reduction: Reduction = REDUCTION

    def options(self) -> classify.TimelineOptions:
        return classify.TimelineOptions(self.top_k, self.window_s, self.stride_s, self.min_score, self.min_windows,
                                        reduction=_rung(self.reduction))  # fmt: skip


class StreamOptions(BaseModel):
    """A live stream's options (also the WebSocket's first message)."""

    model_config = {"extra": "forbid"}

    window_s: float = Field(2.0, gt=0, le=60)
    stride_s: float = Field(1.0, ge=0.1, le=60)
    top_k: int = Field(3, ge=1, le=1000)
    min_score: float = Field(0.0, ge=0, le=1)
    min_windows: int = Field(2, ge=1, le=100)
    sampling: Literal["model", "uniform", "dense"] = "model"
    reduction: Reduction = REDUCTION

    def options(self) -> classify.TimelineOptions:
        return classify.TimelineOptions(self.top_k, self.window_s, self.stride_s, self.min_score, self.min_windows,
                                        None if self.sampling == "model" else self.sampling,
                                        _rung(self.reduction))  # fmt: skip


class StreamRequest(StreamOptions):
    url: str = Field(max_length=2048, description="rtsp://, rtsps://, http(s):// (a file or an HLS playlist)")


class StreamStats(BaseModel):
    frames: int
    fps_in: float
    windows: int
    dropped: int = Field(description="windows dropped because inference was behind")
    lag_s: float = Field(description="last window: from its last frame to its event")
    retries: int
    events: int


class StreamInfo(BaseModel):
    id: str
    url: str | None = Field(description="None: client push over /v1/streams/ws")
    state: Literal["starting", "running", "retrying", "finished", "failed", "stopped"]
    reason: str | None = Field(description="why it ended")
    window_s: float
    stride_s: float
    top_k: int
    created: float = Field(description="Unix time")
    stats: StreamStats

    @classmethod
    def of(cls, stream) -> StreamInfo:
        return cls(id=stream.id, url=stream.url, state=stream.state, reason=stream.reason,
                   window_s=stream.opts.window_s, stride_s=stream.opts.stride_s, top_k=stream.opts.top_k,
                   created=stream.created, stats=StreamStats(**stream.stats()))  # fmt: skip


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


class MergeMap(BaseModel):
    """What STTM/ToMe merged in the first view: for every patch of the `grid` (t, h, w) the
    final token it ended in. `ids`: base64 of little-endian uint16, t-major (`t*h*w` values);
    equal ids = one merged token. Time slice `i` starts at frame `frames[i]`."""

    grid: list[int]
    frames: list[int]
    tokens: int = Field(description="merged tokens the model kept")
    ids: str

    @classmethod
    def of(cls, merges: classify.Merges) -> MergeMap:
        ids = np.asarray(merges.index, dtype="<u2")
        return cls(grid=list(merges.grid), frames=merges.frames, tokens=int(np.unique(ids).size),
                   ids=base64.b64encode(ids.tobytes()).decode())  # fmt: skip


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction]
    frames: list[int] = Field(description="frame indices used (first clip)")
    views: int
    video: VideoMeta
    latency_ms: Latency
    reduction: float = Field(description="the rung it ran on: its nominal reduction")
    gflops: float = Field(description="that rung's multiply-adds per clip, G")
    merges: MergeMap | None = Field(None, description="with `explain=true` only")

    @classmethod
    def of(cls, result: classify.Classification) -> ClassifyResponse:
        merges = MergeMap.of(result.merges) if result.merges is not None else None
        return cls(model=result.model, predictions=[Prediction.of(p) for p in result.predictions],
                   frames=result.frames, views=result.views, video=VideoMeta.of(result.video),
                   latency_ms=Latency.of(result.latency), reduction=result.reduction,
                   gflops=result.gflops, merges=merges)  # fmt: skip


class Window(BaseModel):
    start_s: float
    end_s: float
    predictions: list[Prediction]


class Segment(BaseModel):
    label: str
    start_s: float
    end_s: float
    score: float = Field(description="mean probability of the label over the segment's windows")

    @classmethod
    def of(cls, s) -> Segment:
        return cls(label=s.label, start_s=round(s.start_s, 3), end_s=round(s.end_s, 3), score=round(s.score, 4))


class TimelineResponse(BaseModel):
    model: str
    windows: list[Window]
    segments: list[Segment]
    video: VideoMeta
    latency_ms: Latency
    reduction: float = Field(description="the rung it ran on: its nominal reduction")
    gflops: float = Field(description="that rung's multiply-adds per clip, G")

    @classmethod
    def of(cls, result: classify.Timeline) -> TimelineResponse:
        windows = [Window(start_s=round(w.start_s, 3), end_s=round(w.end_s, 3),
                          predictions=[Prediction.of(p) for p in w.predictions]) for w in result.windows]  # fmt: skip
        return cls(model=result.model, windows=windows, segments=[Segment.of(s) for s in result.segments],
                   video=VideoMeta.of(result.video), latency_ms=Latency.of(result.latency),
                   reduction=result.reduction, gflops=result.gflops)  # fmt: skip


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
    reason: str = Field("", description="why this runtime and precision run here (the CPU's units, a flag, a fallback)")
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
