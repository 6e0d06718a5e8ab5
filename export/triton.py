"""A Triton model repository: `<repo>/<name>/config.pbtxt`, `labels.txt`, `1/model.onnx`
(and `<repo>/<name>_trt/` with `1/model.plan` when an engine was built)."""

from __future__ import annotations

import shutil
from pathlib import Path

from export.metadata import ModelMetadata


def model_config(meta: ModelMetadata, platform: str, max_batch: int, gpu: bool, name: str) -> str:
    """config.pbtxt text (protobuf text format of Triton's ModelConfig)."""
    dims = f"[ 3, {meta.num_frames}, {meta.image_size}, {meta.image_size} ]"
    preferred = sorted({b for b in (max(1, max_batch // 2), max_batch)})
    return f"""name: "{name}"
platform: "{platform}"
max_batch_size: {max_batch}
input [
  {{
    name: "{meta.input_name}"
    data_type: TYPE_FP32
    dims: {dims}
  }}
]
output [
  {{
    name: "{meta.output_name}"
    data_type: TYPE_FP32
    dims: [ {len(meta.labels)} ]
    label_filename: "labels.txt"
  }}
]
dynamic_batching {{
  preferred_batch_size: [ {", ".join(map(str, preferred))} ]
  max_queue_delay_microseconds: 2000
}}
instance_group [
  {{
    count: 1
    kind: {"KIND_GPU" if gpu else "KIND_CPU"}
  }}
]
parameters {{
  key: "sttm_merge"
  value: {{ string_value: "{meta.merge}@{meta.reduction}" }}
}}
"""


def write_repository(
    repo: str | Path, name: str, meta: ModelMetadata, onnx_path: Path, max_batch: int, engine: Path | None = None
) -> list[Path]:
    """Write one model directory per artifact; returns the model directories."""
    repo = Path(repo)
    written = []
    artifacts = [(name, "onnxruntime_onnx", onnx_path, "model.onnx", False)]
    if engine is not None:
        artifacts.append((f"{name}_trt", "tensorrt_plan", engine, "model.plan", True))
    for model_name, platform, source, filename, gpu in artifacts:
        directory = repo / model_name
        (directory / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, directory / "1" / filename)
        (directory / "labels.txt").write_text("\n".join(meta.labels) + "\n")
        (directory / "config.pbtxt").write_text(model_config(meta, platform, max_batch, gpu, model_name))
        written.append(directory)
    return written
