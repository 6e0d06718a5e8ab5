"""Typed request options and responses (they are the OpenAPI schema at /docs): they
validate HTTP input into the use case's plain options and render its plain results."""

from __future__ import annotations

import base64
from dataclasses import asdict
from typing import Annotated, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    AliasChoices,
    AliasPath,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from media import Views
from runtime.segments import TimelineLimits
from service import classify


def _one_error(value: object, handler: ValidatorFunctionWrapHandler) -> object:
    """One message for the union, not one per member (it was "reduction.literal['auto']: Input
    should be 'auto'; reduction.constrained-float: ...")."""
    try:
        return handler(value)
    except ValidationError:
        raise PydanticCustomError("reduction", "'auto' or a rung's reduction, a number in [0, 1)") from None


# A rung of a ladder of merge ratios, by its nominal reduction, or the load policy's choice.
Reduction = Annotated[Literal["auto"] | Annotated[float, Field(ge=0, lt=1)], WrapValidator(_one_error)]
REDUCTION = Field(
    "auto",
    description="a rung's nominal reduction (GET /v1/models: rungs), or 'auto': the "
    "least-merged rung that meets the latency target under the current load",
)


def _rung(reduction: Reduction) -> float | None:
    return None if reduction == "auto" else float(reduction)


def _rounded(digits: int):
    return AfterValidator(lambda v: round(v, digits))


# what the responses round to: seconds and video rates to ms, scores to 4 digits, milliseconds to 10 us
Seconds = Annotated[float, _rounded(3)]
Score = Annotated[float, _rounded(4)]
Millis = Annotated[float, _rounded(2)]


class Rendered(BaseModel):
    """A response rendered from the use case's plain results by attribute (`model_validate(result)`)."""

    model_config = ConfigDict(from_attributes=True)


class ClassifyQuery(BaseModel):
    """Sampling vocabulary of MMAction2/VideoMAE. `model` uses what the model was trained with."""

    # a misspelt option is a 422, not silently the default; NaN or infinity is "not a finite number"
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

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
        views = Views(
            sampling=None if self.sampling == "model" else self.sampling,
            frame_interval=self.frame_interval,
            num_clips=self.num_clips,
            crops=self.crops,
            start_s=self.start,
            end_s=self.end,
        )
        return classify.ClassifyOptions(
            top_k=self.top_k, views=views, clip_len=self.clip_len, explain=self.explain, reduction=_rung(self.reduction)
        )


NO_ACTION = "a window whose top score is under it is 'no action'"
HYSTERESIS = "segment hysteresis: windows a new label must hold"


# the fields a timeline query and a stream's options hand to `classify.TimelineOptions` as they are
WINDOWING = {"top_k", "window_s", "stride_s", "min_score", "min_windows"}


class TimelineQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    top_k: int = Field(3, **TimelineLimits.TOP_K)
    window_s: float = Field(2.0, **TimelineLimits.WINDOW_S)
    stride_s: float = Field(1.0, **TimelineLimits.STRIDE_S, description="seconds")
    min_score: float = Field(0.0, **TimelineLimits.MIN_SCORE, description=NO_ACTION)
    min_windows: int = Field(2, **TimelineLimits.MIN_WINDOWS, description=HYSTERESIS)
    format: Literal["json", "vtt", "csv"] | None = Field(None, description="default: from Accept, else json")
    reduction: Reduction = REDUCTION

    def options(self) -> classify.TimelineOptions:
        return classify.TimelineOptions(**self.model_dump(include=WINDOWING), reduction=_rung(self.reduction))


class StreamOptions(BaseModel):
    """A live stream's options (also the WebSocket's first message)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    window_s: float = Field(2.0, **TimelineLimits.STREAM_WINDOW_S)
    stride_s: float = Field(1.0, **TimelineLimits.STREAM_STRIDE_S)
    top_k: int = Field(3, **TimelineLimits.TOP_K)
    min_score: float = Field(0.0, **TimelineLimits.MIN_SCORE)
    min_windows: int = Field(2, **TimelineLimits.MIN_WINDOWS)
    sampling: Literal["model", "uniform", "dense"] = "model"
    reduction: Reduction = REDUCTION

    def options(self) -> classify.TimelineOptions:
        sampling = None if self.sampling == "model" else self.sampling
        return classify.TimelineOptions(
            **self.model_dump(include=WINDOWING), sampling=sampling, reduction=_rung(self.reduction)
        )


class StreamRequest(StreamOptions):
    url: str = Field(max_length=2048, description="rtsp://, rtsps://, http(s):// (a file or an HLS playlist)")


class StreamStats(Rendered):
    frames: int
    fps_in: float
    windows: int
    dropped: int = Field(description="windows dropped because inference was behind")
    lag_s: float = Field(description="last window: from its last frame to its event")
    retries: int
    events: int


class StreamInfo(Rendered):
    id: str
    url: str | None = Field(description="None: client push over /v1/streams/ws")
    state: Literal["starting", "running", "retrying", "finished", "failed", "stopped"]
    reason: str | None = Field(description="why it ended")
    window_s: float = Field(validation_alias=AliasChoices("window_s", AliasPath("opts", "window_s")))
    stride_s: float = Field(validation_alias=AliasChoices("stride_s", AliasPath("opts", "stride_s")))
    top_k: int = Field(validation_alias=AliasChoices("top_k", AliasPath("opts", "top_k")))
    created: float = Field(description="Unix time")
    stats: StreamStats


class Prediction(Rendered):
    label: str
    score: float
    index: int


class RoundedPrediction(Prediction):
    """A prediction in a live stream's `window` event: its score to 4 digits."""

    score: Score


class VideoMeta(Rendered):
    duration_s: Seconds
    fps: Seconds
    width: int
    height: int
    codec: str
    frames: int


class Latency(Rendered):
    """Milliseconds per stage."""

    decode: Millis
    preprocess: Millis
    queue: Millis
    inference: Millis
    total: Millis

    @model_validator(mode="before")
    @classmethod
    def _from_seconds(cls, data):
        if isinstance(data, classify.Latency):  # the use case measures seconds
            return {stage: seconds * 1000 for stage, seconds in asdict(data).items()}
        return data


class MergeMap(Rendered):
    """What STTM/ToMe merged in the first view: for every patch of the `grid` (t, h, w) the
    final token it ended in. `ids`: base64 of little-endian uint16, t-major (`t*h*w` values);
    equal ids = one merged token. Time slice `i` starts at frame `frames[i]`."""

    grid: list[int]
    frames: list[int]
    tokens: int = Field(description="merged tokens the model kept")
    ids: str

    @model_validator(mode="before")
    @classmethod
    def _encode(cls, data):
        if isinstance(data, classify.Merges):  # the index array -> base64 of uint16
            ids = np.asarray(data.index, dtype="<u2")
            return dict(
                grid=data.grid,
                frames=data.frames,
                tokens=int(np.unique(ids).size),
                ids=base64.b64encode(ids.tobytes()).decode(),
            )
        return data


LATENCY_MS = Field(validation_alias=AliasChoices("latency_ms", "latency"))


class ClassifyResponse(Rendered):
    model: str
    predictions: list[Prediction]
    frames: list[int] = Field(description="frame indices used (first clip)")
    views: int
    video: VideoMeta
    latency_ms: Latency = LATENCY_MS
    reduction: float = Field(description="the rung it ran on: its nominal reduction")
    gflops: float = Field(description="that rung's multiply-adds per clip, G")
    merges: MergeMap | None = Field(None, description="with `explain=true` only")


class Window(Rendered):
    start_s: Seconds
    end_s: Seconds
    predictions: list[Prediction]


class StreamWindow(Rendered):
    """A live stream's `window` event (SSE and WebSocket): times on the stream's clock."""

    start_s: Seconds
    end_s: Seconds
    predictions: list[RoundedPrediction]
    latency_ms: Millis = Field(description="queue + inference")
    lag_s: Seconds = Field(description="from the window's last frame to this event")


class Segment(Rendered):
    label: str
    start_s: Seconds
    end_s: Seconds
    score: Score = Field(description="mean probability of the label over the segment's windows")


class TimelineResponse(Rendered):
    model: str
    windows: list[Window]
    segments: list[Segment]
    video: VideoMeta
    latency_ms: Latency = LATENCY_MS
    reduction: float = Field(description="the rung it ran on: its nominal reduction")
    gflops: float = Field(description="that rung's multiply-adds per clip, G")


def _from(*path: str, name: str | None = None, **field):
    """A field read by name from a dict or a response, else at `path` of the object it renders
    (`ModelInfo.model_validate(classifier)`: `backend.meta.arch`)."""
    choices = (AliasPath(*path), name) if name else (AliasPath(*path),)
    return Field(validation_alias=AliasChoices(*choices), **field)


def _meta(key: str, name: str | None = None, **field):
    return _from("backend", "meta", key, name=name or key, **field)


def _spec(key: str, name: str | None = None, **field):
    return _from("backend", "meta", "input_spec", key, name=name or key, **field)


class InputInfo(Rendered):
    """What a clip must look like for the model: `media.InputSpec`, field for field. The one
    spelling of the input spec; `ModelInfo`'s flat `frames`, `input_size`, `mean`, `std`,
    `sampling` and `frame_interval` repeat it for existing clients."""

    frames: int = Field(description="T: frames per clip")
    size: int = Field(description="S: the square crop, pixels")
    mean: list[float]
    std: list[float]
    short_side: int = Field(description="the short side is resized to this, then cropped to `size`")
    sampling: str = Field(description="dense (frame_interval) or uniform (segments)")
    frame_interval: int


class RungInfo(Rendered):
    reduction: float = Field(description="nominal: the value a request pins with reduction=")
    name: str = Field(description="its KServe v2 model name")
    gflops: float
    backend: str = _from("backend", "provider", name="backend")
    precision: str = _from("backend", "precision", name="precision")
    measured: dict = Field(description="accuracy and speed measured at export (sttm export --eval-data)")


REASON = "why this runtime and precision run here (the CPU's units, a flag, a fallback)"


class ModelInfo(Rendered):
    """Rendered from the serving classifier: `ModelInfo.model_validate(classifier)`."""

    name: str
    arch: str = _meta("arch")
    labels: list[str] = _meta("labels")
    frames: int = _spec("frames", description="= input_spec.frames")
    input_size: int = _spec("size", "input_size", description="= input_spec.size")
    mean: list[float] = _spec("mean", description="= input_spec.mean")
    std: list[float] = _spec("std", description="= input_spec.std")
    sampling: str = _spec("sampling", description="= input_spec.sampling")
    frame_interval: int = _spec("frame_interval", description="= input_spec.frame_interval")
    merge: str = _meta("merge")
    reduction: float = _meta("reduction")
    gflops: float = _meta("gflops")
    gflops_unmerged: float = _meta("gflops_unmerged")
    backend: str = _from("backend", "provider", name="backend")
    precision: str = _from("backend", "precision", name="precision")
    reason: str = _from("backend", "reason", name="reason", default="", description=REASON)
    rungs: list[RungInfo] = Field(description="a ladder of merge ratios, least merged first (one for a single model)")
    input_spec: InputInfo = _meta("input_spec", description="the input spec (media.InputSpec)")


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


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorSpec(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataV2(BaseModel):
    """A model's KServe v2 metadata: its one input and one output."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class TensorIn(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    # any JSON list (flat or nested, row-major), made an array by NumPy: a union of list types had
    # pydantic try each (9 s and ~50 bytes a number for a million zeros)
    data: list


class InferRequest(BaseModel):
    id: str | None = None
    # the model's one input: 400 `bad_input` for none or more (the route says why); only the schema says how many
    inputs: list[TensorIn] = Field(json_schema_extra={"minItems": 1, "maxItems": 1})
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
