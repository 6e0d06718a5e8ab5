"""`sttm eval`: accuracy and speed of a PyTorch checkpoint or an exported `.onnx` on a
labelled split, through the same decoding and preprocessing as the server."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from export.validate import open_onnx
from models.checkpoint import Sidecars
from models.data import VideoDataset, collate, decoded, load_split, require_read
from models.scoring import Tally
from runtime import Backend


def _scores(run, loader: DataLoader, labels: tuple[str, ...], split: str) -> dict:
    tally = Tally(labels)
    started = time.perf_counter()
    infer = 0.0
    for batch in map(decoded, loader):
        if batch is None:
            continue
        videos, targets = batch
        t = time.perf_counter()
        logits = run(videos)
        infer += time.perf_counter() - t
        tally.add(logits, targets.numpy())
    wall = time.perf_counter() - started
    require_read(tally.total, loader.dataset, split)
    return {
        **tally.scores(),
        "skipped": len(loader.dataset) - tally.total,  # named in the log as they were skipped
        "clips_per_s": tally.total / max(wall, 1e-9),  # end to end: decode + preprocess + model
        "model_clips_per_s": tally.total / max(infer, 1e-9),
        "confusion": tally.confusion.tolist(),
    }


def evaluate(
    model_ref: str,
    data: str | Path,
    split: str = "test",
    merge: str | None = None,
    reduction: float | None = None,
    batch_size: int = 8,
    workers: int = 2,
    on_error: str = "skip",
    exported: Backend | None = None,
    sidecars: Sidecars | None = None,
) -> dict:
    """Top-1/top-5/per-class accuracy, GFLOPs per clip and clips/s.

    `exported`: an exported model already opened by the caller (`sttm eval`: with
    `runtime.load_backend`, as the server runs it); else an `.onnx` `model_ref` runs on ONNX
    Runtime's CPU provider (`open_onnx`) and a checkpoint in PyTorch."""
    if exported is None and str(model_ref).endswith(".onnx"):
        exported = open_onnx(model_ref)
    if exported is not None:
        if merge is not None or reduction is not None:
            raise ValueError("an exported model has its merging built in: drop --merge/--reduction")
        meta = exported.meta
        spec, labels, gflops = meta.input_spec, meta.labels, meta.gflops

        def run(videos):
            return exported.run(videos.numpy())

        method, red = meta.merge, meta.reduction
    else:
        from models import load_model

        model = load_model(model_ref, merge=merge, reduction=reduction, sidecars=sidecars or Sidecars())
        spec, labels, gflops = model.input_spec, model.labels, model.gflops()
        method, red = model.merge_config.method, model.merge_config.reduction

        def run(videos):
            with torch.inference_mode():
                return model(videos).numpy()

    split_data = load_split(data, split, labels)
    dataset = VideoDataset(split_data, spec, train=False, on_error=on_error)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    result = _scores(run, loader, labels, split)
    return {"model": str(model_ref), "split": split, "merge": method, "reduction": red, "gflops": gflops, **result}
