"""All service settings in one place: flags or `STTM_*` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from media import Limits
from runtime.backends import BackendOptions, Kind, Precision

DEMO_ONNX = Path(__file__).resolve().parents[1] / "models" / "demo" / "demo.onnx"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STTM_", env_file=None, extra="ignore")

    model: Path = Field(
        DEMO_ONNX,
        description="exported .onnx (its metadata says how to preprocess), a ladder "
        "directory (ladder.json: one model per merge ratio), or 'demo'",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    backend: Kind = "auto"  # auto: OpenVINO on the CPU when installed, else ONNX Runtime; engines: TensorRT
    precision: Precision = "auto"  # what the runtime computes in; auto: bf16 on CPUs with bf16 units (OpenVINO)
    # ONNX Runtime providers, in order of preference; those not installed are skipped
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    intra_op_threads: int = 0  # 0: ONNX Runtime decides
    engine_cache: Path | None = None  # TensorRT provider: engine + timing cache directory (a volume)
    # dynamic batching
    max_batch: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64  # clips waiting for the model; beyond it: 503 + Retry-After
    # a ladder: auto requests run on the least-merged rung predicted to finish the queue within
    # this target (the most merged when none does; it never rejects). Unset: the least merged.
    latency_target_ms: float | None = Field(None, gt=0)
    # decoding
    decode_workers: int = 2
    max_upload_mb: float = 200.0
    max_pixels: int = 3840 * 2160
    max_duration_s: float = 3600.0
    decode_timeout_s: float = 30.0
    max_views: int = 30  # num_clips x crops
    max_windows: int = 3600  # timeline windows per request (an hour at a 1 s stride)
    read_timeout_s: float = 60.0  # a request body not complete this long after the request began is cut (408)
    # continuous video: live streams (POST /v1/streams, /v1/streams/ws) and long timelines
    stream_allow: str = ""  # hosts and CIDRs URL sources may name, comma-separated; empty: none
    max_streams: int = 4  # live streams at once (URL and client push)
    stream_keep_s: float = 60.0  # a finished stream (and its events) stays addressable this long
    stream_events: int = 2000  # events kept per stream for late subscribers (Last-Event-ID)
    stream_slots: int = 16  # batcher slots streams and timelines may hold at once; uploads keep the rest
    stream_stall_s: float = 10.0  # the longest wait for a source's next frame
    stream_retry_s: float = 30.0  # a stalled or dropped source is retried (with backoff) this long, then ends
    stream_max_pixels: int = 1920 * 1080  # per-stream frame size limit
    stream_max_fps: float = 60.0  # frames beyond this rate are thinned out
    # behaviour
    require_model: bool = True  # missing/corrupt model: exit (True) or stay not-ready (False)
    api_key: SecretStr | None = None  # bearer token; health endpoints stay open

    @field_validator("model", mode="before")
    @classmethod
    def _demo_name(cls, value: object) -> object:
        """`demo` names the bundled model, as in every other command."""
        return DEMO_ONNX if value == "demo" else value

    @property
    def backend_options(self) -> BackendOptions:
        """How the model runner is opened."""
        return BackendOptions(self.backend, self.precision, self.providers, self.intra_op_threads, self.max_batch,
                              self.engine_cache)  # fmt: skip

    @property
    def latency_target_s(self) -> float | None:
        return None if self.latency_target_ms is None else self.latency_target_ms / 1000

    @property
    def limits(self) -> Limits:
        """The decoding limits these settings impose."""
        return Limits(self.max_pixels, self.max_duration_s, self.decode_timeout_s)
