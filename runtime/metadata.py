"""What an exported model carries: everything the server needs to preprocess a clip and
name the answer — in an ONNX file's `metadata_props`, or in the JSON sidecar beside a
TensorRT engine. Plain Python (no torch, no onnx), so the service can read it."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from media import InputSpec

PREFIX = "sttm."
ENGINE_SUFFIXES = (".plan", ".engine")  # a serialized TensorRT engine
IR_SUFFIX = ".xml"  # an OpenVINO IR (its weights in the .bin beside it): `sttm export --format openvino`
# a `torch.export` program (`sttm export --format torch`), run by the PyTorch backend (the `torch` plugin);
# its metadata: `asdict(ModelMetadata)` as JSON, in the archive's extra file `TORCH_METADATA`
TORCH_SUFFIX = ".pt2"
TORCH_METADATA = "sttm_metadata.json"
EXPORTED_SUFFIXES = (
    ".onnx",
    IR_SUFFIX,
    *ENGINE_SUFFIXES,
    TORCH_SUFFIX,
)  # what `sttm export` writes and the server runs


@dataclass(frozen=True)
class ModelMetadata:
    """The artifact contract. Its fields are the file's keys (`sttm.num_frames`, ...), flat and
    unchanged since the first export so that every file on disk and every deployed reader keeps
    working; the input spec is read from it nested once, as `input_spec` (`media.InputSpec`:
    `frames`, `size`, ...) — the spelling `GET /v1/models` (`input`), `sttm info --json`
    (`input`) and the Python API (`VideoClassifier.input_spec`) share."""

    name: str
    arch: str
    labels: tuple[str, ...]
    num_frames: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    short_side: int
    sampling: str  # "dense" (frame_interval) or "uniform" (segments)
    frame_interval: int
    merge: str
    reduction: float
    gflops: float  # multiply-adds per clip, G
    gflops_unmerged: float
    precision: str = "fp32"
    input_name: str = "video"
    output_name: str = "logits"
    # `merge_index` output: int32 `[B, t*h*w]`, for every patch of the grid `merge_grid` (t, h, w)
    # the final token it was merged into (`models.explain`); "" in files exported without it
    merge_output: str = ""
    merge_grid: tuple[int, ...] = ()

    @property
    def input_spec(self) -> InputSpec:
        """What a clip must look like for this model (`media.load_clip` makes it)."""
        return InputSpec(
            frames=self.num_frames,
            size=self.image_size,
            mean=self.mean,
            std=self.std,
            short_side=self.short_side,
            sampling=self.sampling,
            frame_interval=self.frame_interval,
        )

    def to_props(self) -> dict[str, str]:
        """One `sttm.<field>` entry per field, each a JSON value (readable in Netron)."""
        return {PREFIX + k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        """Inverse of `to_props`; raises ValueError naming what is missing or malformed."""
        values = {}
        for f in fields(cls):
            key = PREFIX + f.name
            if key not in props:
                if f.default is not MISSING:
                    continue
                raise ValueError(f"model metadata lacks {key!r}: was it written by `sttm export`?")
            try:
                value = json.loads(props[key])
            except json.JSONDecodeError:
                raise ValueError(f"model metadata {key!r} is not JSON: {props[key][:80]!r}") from None
            values[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict) -> ModelMetadata:
        """From `asdict(meta)` (a TensorRT engine's JSON sidecar), with the same checks."""
        return cls.from_props({PREFIX + k: json.dumps(v) for k, v in data.items()})


def sidecar_path(engine_path: str | Path) -> Path:
    """`model.plan` -> `model.plan.json`: the cache key and metadata of an engine."""
    return Path(f"{engine_path}.json")


def read_sidecar(engine_path: str | Path) -> ModelMetadata:
    """The metadata `sttm export --format tensorrt` wrote beside an engine; ValueError
    naming the file when it is missing or malformed."""
    sidecar = sidecar_path(engine_path)
    if not sidecar.is_file():
        writer = "`sttm export --format tensorrt` writes it"
        raise ValueError(f"{engine_path}: no metadata sidecar {sidecar.name} ({writer})")
    try:
        return ModelMetadata.from_dict(json.loads(sidecar.read_text())["metadata"])
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{sidecar}: {err}") from None
