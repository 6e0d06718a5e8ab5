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


# The input spec's flat keys in files exported before it was nested (`sttm.num_frames`, ...):
# still read, never written.
LEGACY_INPUT_KEYS = {
    "frames": "num_frames",
    "size": "image_size",
    "mean": "mean",
    "std": "std",
    "short_side": "short_side",
    "sampling": "sampling",
    "frame_interval": "frame_interval",
}


@dataclass(frozen=True)
class ModelMetadata:
    """The artifact contract: one `sttm.<field>` key per field in the file, each a JSON value;
    the input spec nested once as `input_spec` (`media.InputSpec`: `frames`, `size`, ...) —
    the spelling of `GET /v1/models`, `sttm info --json` and the Python API
    (`VideoClassifier.input_spec`). Files written before the spec was nested are still read."""

    name: str
    arch: str
    labels: tuple[str, ...]
    input_spec: InputSpec  # what a clip must look like for this model (`media.load_clip` makes it)
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
    # the file's max abs logit difference from PyTorch on the validation clips, measured when
    # `sttm export` validated it (None: not recorded, as in files written before it was): what a
    # runtime's rewrite of the file may add stays within the gate (`agreement.rewrite_tolerance`)
    validated_diff: float | None = None

    def to_props(self) -> dict[str, str]:
        """One `sttm.<field>` entry per field, each a JSON value (readable in Netron)."""
        return {PREFIX + k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        """Inverse of `to_props`; raises ValueError naming what is missing or malformed."""
        values = {}
        for f in fields(cls):
            key = PREFIX + f.name
            if f.name == "input_spec" and key not in props:
                values[f.name] = _legacy_input_spec(props)
            elif key in props:
                values[f.name] = _json_value(key, props[key])
            elif f.default is MISSING:
                raise ValueError(f"model metadata lacks {key!r}: was it written by `sttm export`?")
        if isinstance(values["input_spec"], dict):
            values["input_spec"] = _input_spec(values["input_spec"])
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict) -> ModelMetadata:
        """From `asdict(meta)` (a TensorRT engine's JSON sidecar), with the same checks."""
        return cls.from_props({PREFIX + k: json.dumps(v) for k, v in data.items()})


def _json_value(key: str, text: str):
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"model metadata {key!r} is not JSON: {text[:80]!r}") from None
    return tuple(value) if isinstance(value, list) else value


def _input_spec(data: dict) -> InputSpec:
    try:
        return InputSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    except TypeError as err:
        raise ValueError(f"model metadata {PREFIX}input_spec is malformed: {err}") from None


def _legacy_input_spec(props: dict[str, str]) -> InputSpec:
    """The spec from a file exported before it was nested (`sttm.num_frames`, `sttm.image_size`, ...)."""
    data = {}
    for name, old in LEGACY_INPUT_KEYS.items():
        key = PREFIX + old
        if key not in props:
            raise ValueError(f"model metadata lacks {PREFIX}input_spec: was it written by `sttm export`?")
        data[name] = _json_value(key, props[key])
    return _input_spec(data)


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
        raise ValueError(f"{sidecar}: {json_error(err)}") from None


def json_error(err: Exception) -> str:
    """What is wrong with a JSON file, from what reading it raised: a KeyError's text is just the
    key (`'rungs'`), which says nothing to whoever wrote the file."""
    return f"no {err.args[0]!r} field" if isinstance(err, KeyError) and err.args else str(err)
