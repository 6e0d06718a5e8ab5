"""A Triton model repository that a Triton server serves as it is: raw clips in, labels out.

    <repo>/<name>_preprocess/   Python backend: video bytes -> the model's input (media.load_clip)
    <repo>/<name>/              the model: `1/model.onnx`, run by a Python-backend model on our
                                CPU backend (runtime "python") or by Triton's `onnxruntime_onnx`
                                platform (runtime "platform", GPU sites)
    <repo>/<name>_trt/          `tensorrt_plan`, when an engine was built
    <repo>/<name>_postprocess/  Python backend: logits -> top-k labels and scores (the model's labels)
    <repo>/<name>_video/        the ensemble: `video` (BYTES) -> `labels` (BYTES), `scores` (FP32)

The Python-backend models run inside Triton's stub process, not inside this package: each
`model.py` written here only imports its class from `tritonserve.python_models` (Triton's
side, which uses media and the runtime only; export does not import it). So the code Triton
runs is the package's own, linted and tested, and the repository only names it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from runtime.metadata import ModelMetadata

Runtime = Literal["python", "platform"]
KINDS = {"python": "KIND_CPU", "onnxruntime_onnx": "KIND_AUTO", "tensorrt_plan": "KIND_GPU"}  # AUTO: the GPU if any

# What the stub runs: the class from the installed package (or from PYTHONPATH, which
# `sttm triton` sets; Triton's embedded interpreter does not read PYTHONPATH by itself).
PYTHON_MODEL = '''"""Triton Python-backend model written by `sttm export --format triton`: {what}."""

import os
import sys

sys.path[:0] = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]

from tritonserve.python_models import {cls} as TritonPythonModel  # noqa: E402, F401
'''


def _tensor(name: str, dtype: str, dims: list[int], optional: bool = False, label_file: bool = False) -> str:
    extra = " optional: true" if optional else ""
    extra += ' label_filename: "labels.txt"' if label_file else ""
    return f'{{ name: "{name}" data_type: {dtype} dims: [ {", ".join(map(str, dims))} ]{extra} }}'


def _io(inputs: list[str], outputs: list[str]) -> str:
    return "".join(
        f"{kind} [\n  " + ",\n  ".join(items) + "\n]\n" for kind, items in (("input", inputs), ("output", outputs))
    )


def _instances(count: int, kind: str = "KIND_CPU") -> str:
    return f"instance_group [ {{ count: {count} kind: {kind} }} ]\n"


def model_config(meta: ModelMetadata, platform: str, max_batch: int, name: str, instances: int = 1) -> str:
    """config.pbtxt of the model itself (protobuf text format of Triton's ModelConfig):
    `platform` is `onnxruntime_onnx`, `tensorrt_plan`, or `python` (our CPU backend inside a
    Python-backend model). Dynamic batching, `instances` instances, a warm-up request."""
    dims = [3, meta.input_spec.frames, meta.input_spec.size, meta.input_spec.size]
    preferred = sorted({b for b in (max(1, max_batch // 2), max_batch)})
    engine = 'backend: "python"' if platform == "python" else f'platform: "{platform}"'
    return (
        f'name: "{name}"\n{engine}\nmax_batch_size: {max_batch}\n'
        + _io(
            [_tensor(meta.input_name, "TYPE_FP32", dims)],
            [_tensor(meta.output_name, "TYPE_FP32", [len(meta.labels)], label_file=True)],
        )
        + f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
        "  max_queue_delay_microseconds: 5000\n}\n"
        + _instances(instances, KINDS[platform])
        + f'model_warmup [ {{ name: "zeros" batch_size: 1 inputs {{ key: "{meta.input_name}" value {{ '
        f"data_type: TYPE_FP32 dims: [ {', '.join(map(str, dims))} ] zero_data: true }} }} }} ]\n"
        f'parameters {{ key: "sttm_merge" value: {{ string_value: "{meta.merge}@{meta.reduction}" }} }}\n'
    )


def preprocess_config(meta: ModelMetadata, name: str, instances: int) -> str:
    """Video bytes (one clip per request) -> `[views, 3, T, S, S]`; views = num_clips x crops.
    `instances` clips are decoded at once (as `sttm serve`'s decoding threads): with one, the
    model would only ever see one clip at a time and its dynamic batcher would have nothing to do."""
    dims = [-1, 3, meta.input_spec.frames, meta.input_spec.size, meta.input_spec.size]
    inputs = [_tensor("video", "TYPE_STRING", [1])]
    inputs += [_tensor(o, "TYPE_INT32", [1], optional=True) for o in ("num_clips", "crops", "frame_interval")]
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
        + _io(inputs, [_tensor("clip", "TYPE_FP32", dims)])
        + _instances(instances)
    )


def postprocess_config(meta: ModelMetadata, name: str) -> str:
    """Logits of one clip's views -> its top-k labels and scores, best first."""
    logits = _tensor("logits", "TYPE_FP32", [-1, len(meta.labels)])
    inputs = [logits, _tensor("top_k", "TYPE_INT32", [1], optional=True)]
    outputs = [_tensor("labels", "TYPE_STRING", [-1]), _tensor("scores", "TYPE_FP32", [-1])]
    return f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n' + _io(inputs, outputs) + _instances(1)


def ensemble_config(meta: ModelMetadata, name: str, pre: str, model: str, post: str) -> str:
    """One call for a client: `video` (BYTES) -> `labels` (BYTES), `scores` (FP32)."""
    inputs = [_tensor("video", "TYPE_STRING", [1])]
    inputs += [_tensor(o, "TYPE_INT32", [1], optional=True) for o in ("num_clips", "crops", "frame_interval")]
    inputs += [_tensor("top_k", "TYPE_INT32", [1], optional=True)]
    outputs = [_tensor("labels", "TYPE_STRING", [-1]), _tensor("scores", "TYPE_FP32", [-1])]

    def step(model_name: str, ins: dict[str, str], outs: dict[str, str]) -> str:
        maps = [f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in ins.items()]
        maps += [f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in outs.items()]
        return (
            f'{{\n      model_name: "{model_name}"\n      model_version: -1\n      ' + "\n      ".join(maps) + "\n    }"
        )

    options = {o: o for o in ("video", "num_clips", "crops", "frame_interval")}
    steps = [
        step(pre, options, {"clip": "clip"}),
        step(model, {meta.input_name: "clip"}, {meta.output_name: "logits"}),
        step(post, {"logits": "logits", "top_k": "top_k"}, {"labels": "labels", "scores": "scores"}),
    ]
    return (
        f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: 0\n'
        + _io(inputs, outputs)
        + "ensemble_scheduling {\n  step [\n    "
        + ",\n    ".join(steps)
        + "\n  ]\n}\n"
    )


def _model_dir(repo: Path, name: str, config: str, labels: tuple[str, ...] | None = None) -> Path:
    directory = repo / name
    (directory / "1").mkdir(parents=True, exist_ok=True)
    (directory / "config.pbtxt").write_text(config)
    if labels is not None:
        (directory / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    return directory


def _python_model(directory: Path, cls: str, what: str) -> None:
    (directory / "1" / "model.py").write_text(PYTHON_MODEL.format(cls=cls, what=what))


def write_repository(
    repo: str | Path,
    name: str,
    meta: ModelMetadata,
    onnx_path: Path,
    max_batch: int,
    engine: Path | None = None,
    runtime: Runtime = "python",
    instances: int = 1,
    decoders: int = 2,
) -> list[Path]:
    """Write the repository (see the module docstring); returns the model directories, the
    model first. `runtime`: who runs the ONNX model, our CPU backend in a Python-backend
    model (`python`, where Triton has no ONNX Runtime backend, as in the `nvidia-pytriton`
    wheel) or Triton's `onnxruntime_onnx` platform (`platform`). With `platform` and an
    engine, the ensemble runs the TensorRT model."""
    if runtime not in ("python", "platform"):
        raise ValueError(f"--triton-runtime must be python or platform, not {runtime!r}")
    if instances < 1 or decoders < 1:
        raise ValueError("--instances and --triton-decoders must be >= 1")
    repo = Path(repo)
    platform = "python" if runtime == "python" else "onnxruntime_onnx"
    model = _model_dir(repo, name, model_config(meta, platform, max_batch, name, instances), meta.labels)
    shutil.copyfile(onnx_path, model / "1" / "model.onnx")
    if runtime == "python":
        _python_model(model, "ModelRunner", "the ONNX model on sttm-serve's CPU backend (ONNX Runtime or OpenVINO)")
    written = [model]
    served = name
    if engine is not None:
        trt_config = model_config(meta, "tensorrt_plan", max_batch, f"{name}_trt", instances)
        trt = _model_dir(repo, f"{name}_trt", trt_config, meta.labels)
        shutil.copyfile(engine, trt / "1" / "model.plan")
        written.append(trt)
        served = trt.name if runtime == "platform" else name
    pre = _model_dir(repo, f"{name}_preprocess", preprocess_config(meta, f"{name}_preprocess", decoders))
    sidecar = {"metadata": asdict(meta), "max_batch": max_batch}  # a clip's views go to the model as one batch
    (pre / "1" / "metadata.json").write_text(json.dumps(sidecar, indent=2))
    _python_model(pre, "Preprocess", "video bytes -> the model's input, by sttm-serve's media path")
    post = _model_dir(repo, f"{name}_postprocess", postprocess_config(meta, f"{name}_postprocess"), meta.labels)
    _python_model(post, "Postprocess", "logits -> top-k labels and scores")
    video = _model_dir(repo, f"{name}_video", ensemble_config(meta, f"{name}_video", pre.name, served, post.name))
    return [*written, pre, post, video]
