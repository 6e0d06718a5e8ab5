"""All service settings in one place: flags or `STTM_*` environment variables (those of the
runtime and of decoding are `runtime.settings.RuntimeSettings`, shared with Triton's models)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from runtime.backends import prefer_torch
from runtime.settings import DEMO_ONNX, RuntimeSettings
from service.sources import AllowList

DEMO_CHECKPOINT = DEMO_ONNX.parent  # the same model as a checkpoint (config.json + weights), for PyTorch

__all__ = ["DEMO_CHECKPOINT", "DEMO_ONNX", "Settings", "misspelt"]


class Settings(RuntimeSettings):
    model: Path = Field(
        DEMO_ONNX,
        description="exported .onnx (its metadata says how to preprocess), a ladder "
        "directory (ladder.json: one model per merge ratio), or 'demo'; with --backend torch also "
        "a .pt2 (sttm export --format torch), a checkpoint or a built-in model name",
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # server processes (sttm serve --workers), each with its own model; URL streams need one (a
    # stream lives in the process that started it, and its later requests may reach another)
    workers: int = Field(1, ge=1)
    # dynamic batching (max_batch: RuntimeSettings)
    max_wait_ms: float = Field(5.0, ge=0)
    max_queue: int = Field(64, ge=1)  # clips waiting for the model; beyond it: 503 + Retry-After
    # a ladder: auto requests run on the least-merged rung predicted to finish the queue within
    # this target (the most merged when none does; it rejects only with a deadline). Unset: the least merged.
    latency_target_ms: float | None = Field(None, gt=0)
    # the target as a promise: refuse (503 + Retry-After) an upload that even the most merged rung
    # is predicted to answer later than it, before decoding it (service.ladder_policy)
    latency_deadline: bool = False
    # decoding (the limits: RuntimeSettings)
    decode_workers: int = Field(2, ge=1)
    max_windows: int = Field(3600, ge=1)  # timeline windows per request (an hour at a 1 s stride)
    # a request body not complete this long after the request began is cut (408)
    read_timeout_s: float = Field(60.0, gt=0)
    # continuous video: live streams (POST /v1/streams, /v1/streams/ws) and long timelines
    stream_allow: str = ""  # hosts and CIDRs URL sources may name, comma-separated; empty: none
    max_streams: int = Field(4, ge=0)  # live streams at once (URL and client push)
    stream_keep_s: float = Field(60.0, ge=0)  # a finished stream (and its events) stays addressable this long
    stream_events: int = Field(2000, ge=1)  # events kept per stream for late subscribers (Last-Event-ID)
    stream_slots: int = Field(16, ge=1)  # batcher slots streams and timelines may hold at once; uploads keep the rest
    stream_stall_s: float = Field(10.0, gt=0)  # the longest wait for a source's next frame
    # a stalled or dropped source is retried (with backoff) this long, then ends
    stream_retry_s: float = Field(30.0, ge=0)
    stream_max_pixels: int = Field(1920 * 1080, ge=1)  # per-stream frame size limit
    stream_max_fps: float = Field(60.0, gt=0)  # frames beyond this rate are thinned out
    # behaviour
    require_model: bool = True  # missing/corrupt model: exit (True) or stay not-ready (False)
    api_key: SecretStr | None = None  # an API key (Authorization: Bearer / X-API-Key); health endpoints stay open
    # more keys, one a line (or `sha256:<hex>`), re-read when the file changes or on SIGHUP (service.keys)
    api_keys_file: Path | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _demo_name(cls, value: object) -> object:
        """`demo` names the bundled model, as in every other command."""
        return DEMO_ONNX if value == "demo" else value

    @field_validator("stream_allow")
    @classmethod
    def _allow_list(cls, value: str) -> str:
        AllowList.parse(value)  # an item that would never match is refused at start
        return value

    @model_validator(mode="after")
    def _deadline_needs_target(self) -> Settings:
        if self.latency_deadline and self.latency_target_ms is None:
            raise ValueError("latency_deadline needs a latency target (STTM_LATENCY_TARGET_MS)")
        return self

    @model_validator(mode="after")
    def _demo_on_torch(self) -> Settings:
        """The bundled demo on PyTorch is its checkpoint: where asked (`--backend torch`), and under
        `auto` where a GPU is served best by PyTorch (`runtime.backends.prefer_torch`)."""
        if self.model == DEMO_ONNX and (self.backend == "torch" or (self.backend == "auto" and prefer_torch())):
            self.model = DEMO_CHECKPOINT
        return self

    @property
    def views_per_request(self) -> int:
        """The most views (clips) one request may hold: STTM_MAX_VIEWS, but no more than the queue
        holds (STTM_MAX_QUEUE). A larger request could never be queued: it was 503 overloaded, retry
        in 1 s, on an idle server, for ever."""
        return min(self.max_views, self.max_queue)

    @property
    def latency_target_s(self) -> float | None:
        return None if self.latency_target_ms is None else self.latency_target_ms / 1000


def misspelt(environ: Mapping[str, str]) -> str | None:
    """One line naming an `STTM_*` variable that is no setting but nearly one (`STTM_MAX_BATCHES`:
    did you mean `STTM_MAX_BATCH`?), or None. pydantic-settings ignores it, so the setting it meant
    would run at its default without a word; other `STTM_*` variables (docker compose's
    `STTM_HOST_PORT`, the tests') are no near miss and pass."""
    names = [f"STTM_{name.upper()}" for name in Settings.model_fields]
    for var in sorted(environ):
        if var.startswith("STTM_") and var not in names and (near := difflib.get_close_matches(var, names, 1, 0.8)):
            return f"{var} is not a setting (did you mean {near[0]}?)"
    return None
