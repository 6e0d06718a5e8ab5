"""The PyTorch artifact: a `torch.export` program (`.pt2`, `sttm export --format torch`) with the
model's metadata (`runtime.metadata.ModelMetadata`) inside, and the metadata of a model.

The program is `models.explain.WithMergeIndex` for a merged model (outputs: logits `[B, classes]`
and merge_index `[B, t*h*w]` int32, as the ONNX export's), the classifier itself otherwise
(logits only); its batch axis is dynamic (1..`max_batch`), every other shape static.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from torch.export.passes import move_to_device_pass

from models import VideoClassifier
from models.train import CHECKPOINTS
from runtime.metadata import TORCH_METADATA, ModelMetadata


def model_name(ref: str) -> str:
    """A model's name from how it was given (a path's stem, or the name itself; a `sttm train`
    run's `RUN/best` or `RUN/last`: the run's name, not "best"), `[A-Za-z0-9_-]`."""
    path = Path(ref.rstrip("/"))
    if path.name in CHECKPOINTS and path.parent.name:
        path = path.parent
    stem = path.stem if ("/" in ref or Path(ref).exists()) else ref
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "model"


def metadata_for(
    model: VideoClassifier,
    name: str,
    precision: str = "fp32",
    input_name: str = "video",
    output_name: str = "logits",
    merge_output: str = "merge_index",
) -> ModelMetadata:
    """What an exported `model` carries (labels, preprocessing, merge, GMACs): the artifact contract."""
    cfg, merge = model.config, model.merge_config
    return ModelMetadata(
        name=name,
        arch=cfg.arch,
        labels=model.labels,
        input_spec=model.input_spec,
        merge=merge.method,
        reduction=merge.reduction,
        gflops=float(f"{model.gflops():.6g}"),
        gflops_unmerged=float(f"{model.gflops(merged=False):.6g}"),
        precision=precision,
        input_name=input_name,
        output_name=output_name,
        merge_output=merge_output if merge.method != "none" else "",
        merge_grid=cfg.grid,
    )


def served_module(model: VideoClassifier, meta: ModelMetadata) -> nn.Module:
    """What runs: the classifier, wrapped to output the merge index too where `meta` names one."""
    from models.explain import WithMergeIndex

    return (WithMergeIndex(model) if meta.merge_output else model).eval()


def save_program(model: VideoClassifier, path: str | Path, meta: ModelMetadata, max_batch: int = 64) -> Path:
    """`torch.export` the served module (dynamic batch 1..`max_batch`) into `path` (`.pt2`), with
    `meta` as the archive's extra file `TORCH_METADATA`."""
    path = Path(path)
    cfg = model.config
    example = torch.zeros(2, 3, cfg.num_frames, cfg.image_size, cfg.image_size)  # (B, 3, T, S, S)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with torch.no_grad():
        program = torch.export.export(
            served_module(model, meta), (example,), dynamic_shapes={"video": {0: batch}}, strict=False
        )
    torch.export.save(program, path, extra_files={TORCH_METADATA: json.dumps(asdict(meta))})
    return path


def load_program(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelMetadata]:
    """A `.pt2` written by `save_program` -> (its module on `device`, its metadata); ValueError
    (one line) for a file that is not one. The program records the device it was exported on in
    its nodes (`arange(..., device=cpu)`): they are rewritten for `device`
    (`torch.export.passes.move_to_device_pass`), weights and buffers moved with them."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a torch.export archive (sttm export --format torch writes one)")
    with zipfile.ZipFile(path) as archive:
        if not any(name.endswith(f"/{TORCH_METADATA}") for name in archive.namelist()):
            raise ValueError(f"{path}: no {TORCH_METADATA} inside: was it written by `sttm export --format torch`?")
    extra = {TORCH_METADATA: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged archive
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ValueError(f"cannot load {path}: {first}") from None
    if not extra[TORCH_METADATA]:
        raise ValueError(f"{path}: no {TORCH_METADATA} inside: was it written by `sttm export --format torch`?")
    program = move_to_device_pass(program, str(device))
    return program.module(), ModelMetadata.from_dict(json.loads(extra[TORCH_METADATA]))
