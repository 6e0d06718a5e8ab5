"""What opening a model and feeding it clips takes, from `STTM_*` environment variables: the
runtime (`STTM_BACKEND`, `STTM_PRECISION`, ...) and the limits a clip is decoded under. Shared
by the HTTP server (`service.settings.Settings` adds its own) and Triton's Python models, so
both refuse the same clips and open the model the same way."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from media import Limits
from runtime.backends import BackendOptions, Kind, Precision, TorchCompile

# The bundled demo model: what `sttm serve`, `sttm predict` and `sttm label` run when no model is named
DEMO_ONNX = Path(__file__).resolve().parents[1] / "models" / "demo" / "demo.onnx"


class RuntimeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STTM_", env_file=None, extra="ignore")

    backend: Kind = "auto"  # auto: per CPU kind and file (backends.cpu.choose_runtime); engines: TensorRT
    precision: Precision = "auto"  # what the runtime computes in; auto: per CPU and file (backends.cpu)
    # ONNX Runtime providers, in order of preference; those not installed are skipped
    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    intra_op_threads: int = Field(0, ge=0)  # 0: ONNX Runtime decides
    engine_cache: Path | None = None  # TensorRT provider: engine + timing cache directory (a volume)
    max_batch: int = Field(8, ge=1)  # dynamic batching: the largest batch the model is sent
    # --backend torch: torch.compile a checkpoint / model name / .pt2 program at load, in this mode
    # (off, default, max-autotune-no-cudagraphs, reduce-overhead); an AOTInductor package is compiled already
    torch_compile: TorchCompile = "off"
    # decoding
    # (each a limit: a count at least 1, a size or a time over 0, or the setting is refused at start)
    max_upload_mb: float = Field(200.0, gt=0)
    max_pixels: int = Field(3840 * 2160, ge=1)
    max_duration_s: float = Field(3600.0, gt=0)
    decode_timeout_s: float = Field(30.0, gt=0)
    max_views: int = Field(30, ge=1)  # num_clips x crops

    @property
    def backend_options(self) -> BackendOptions:
        """How the model runner is opened."""
        return BackendOptions(
            self.backend,
            self.precision,
            self.providers,
            self.intra_op_threads,
            self.max_batch,
            self.engine_cache,
            compile=self.torch_compile,
        )

    @property
    def limits(self) -> Limits:
        """The decoding limits these settings impose."""
        return Limits(self.max_pixels, self.max_duration_s, self.decode_timeout_s)
