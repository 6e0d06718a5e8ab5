"""OpenVINO on the CPU: a model compiled at a precision, and batches scheduled over it.

Clips run one at a time on a model compiled for a batch of 1 (static shapes): a lone clip on
all the threads (the LATENCY hint); a batch of several on the CPU's streams at once (the
THROUGHPUT hint's second compiled model: each stream a share of the cores and a clip of its
own), as many clips as a multiple of the streams fill, the rest alone. Measurements:
docs/runtimes.md.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino

# INFERENCE_PRECISION_HINT values: what the ops that are not quantised compute in
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
Infer = Callable[..., list[np.ndarray]]  # `(video, *more inputs) -> [outputs]`, output 0 the logits


@functools.cache
def core() -> openvino.Core:
    """The process's one OpenVINO Core, for every model it reads and compiles. One, not one per
    model: OpenVINO 2026.4's CPU plugin installs a signal stack on the thread that first compiles
    with a Core and puts the previous one back when that Core goes, so Cores released out of
    order leave a freed stack installed, and the next signal handled on that thread (SIGTERM,
    SIGHUP) ends the process with SIGSEGV (docs/runtimes.md)."""
    return openvino.Core()


def _config(precision: str, threads: int, hint: str, cache: Path | None) -> dict:
    config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": hint}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if cache is not None:  # per compile, not on the shared Core
        config["CACHE_DIR"] = str(cache)
    return config


def compiled(model, precision: str, threads: int, cache: Path | None = None) -> Infer:
    """The model compiled at `precision` for one request on all the threads, as a thread-safe
    function `(video, *more inputs) -> [outputs]` (one infer request per thread; output 0 is
    the logits); compiled models cached in `cache` (OpenVINO's `CACHE_DIR`) when given."""
    compiled = core().compile_model(model, "CPU", _config(precision, threads, "LATENCY", cache))
    local = threading.local()

    def infer(video: np.ndarray, *more: np.ndarray) -> list[np.ndarray]:
        if not hasattr(local, "request"):
            local.request = compiled.create_infer_request()
        result = local.request.infer([np.ascontiguousarray(video, np.float32), *more])
        return [result[i].copy() for i in range(len(compiled.outputs))]

    return infer


def streams(model, precision: str, threads: int, max_batch: int, cache: Path | None = None) -> tuple[Infer, int] | None:
    """The model (batch 1) compiled for the CPU's streams (the THROUGHPUT hint), as (a thread-safe
    function over any number of clips, run as many at once as there are streams; the stream
    count). None where batches cannot fill two streams (`max_batch`, or one stream here)."""
    if max_batch < 2:
        return None
    compiled = core().compile_model(model, "CPU", _config(precision, threads, "THROUGHPUT", cache))
    count = int(compiled.get_property("NUM_STREAMS"))
    if not 2 <= count <= max_batch:
        return None
    local = threading.local()

    def done(request: openvino.InferRequest, slot: tuple[list, int]) -> None:
        outputs, i = slot
        outputs[i] = [request.get_output_tensor(k).data.copy() for k in range(len(compiled.outputs))]

    def infer(video: np.ndarray) -> list[np.ndarray]:
        if not hasattr(local, "queue"):
            local.queue = openvino.AsyncInferQueue(compiled, count)
            local.queue.set_callback(done)
        outputs: list = [None] * len(video)
        for i in range(len(video)):
            local.queue.start_async([np.ascontiguousarray(video[i : i + 1], np.float32)], (outputs, i))
        local.queue.wait_all()
        return [np.concatenate(out) for out in zip(*outputs, strict=True)]

    return infer, count


def clip_by_clip(alone: Infer, streams: tuple[Infer, int] | None = None) -> Infer:
    """A batch through models that take one clip: `streams` = (run, count) takes any number of
    clips and runs `count` at once; as many clips as a multiple of `count` fill go there, the
    rest to `alone`, one by one (a clip alone is faster on all the threads than on a stream's
    share). Outputs joined along the batch, in order."""
    run_many, count = streams or (None, 0)

    def infer(video: np.ndarray) -> list[np.ndarray]:
        many = len(video) - len(video) % count if run_many and len(video) >= count else 0
        parts = [run_many(video[:many])] if many else []
        parts += [alone(video[i : i + 1]) for i in range(many, len(video))]
        return parts[0] if len(parts) == 1 else [np.concatenate(out) for out in zip(*parts, strict=True)]

    return infer


def fixed(model, batch: int):
    """A copy of `model` with its batch dimension fixed to `batch` (the rest as stored)."""
    fixed = model.clone()
    shape = fixed.inputs[0].get_partial_shape()
    shape[0] = batch
    fixed.reshape({fixed.inputs[0]: shape})
    return fixed
