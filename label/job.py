"""One labelling job, start to end: the inputs expanded, the ids already in OUT skipped
(`--resume`), the model checked here before Ray starts, the pipeline run, every row written
once into complete parts, progress drawn, a summary returned."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from label import engine
from label.decode import DecodeSpec, Windows
from label.infer import LabelSpec, ModelPayload
from label.inputs import expand
from label.parts import Parts
from label.progress import Progress
from label.rows import schema
from media import Limits
from runtime.backends import BackendOptions, check_request, read_metadata


@dataclass(frozen=True)
class Job:
    inputs: tuple[str, ...]
    out: Path
    model: Path
    options: BackendOptions = BackendOptions()
    limits: Limits = Limits()
    max_bytes: int = 200 * 2**20
    top_k: int = 5
    timeline: Windows | None = None
    resume: bool = False
    rows_per_part: int = 1000
    part_seconds: float = 30.0
    address: str | None = None
    plan: engine.Plan = engine.Plan()


@dataclass(frozen=True)
class Summary:
    labelled: int  # rows this run wrote
    skipped: int  # already in OUT
    errors: Counter = field(default_factory=Counter)  # status -> rows
    seconds: float = 0.0

    @property
    def files_per_s(self) -> float:
        return self.labelled / self.seconds if self.seconds else 0.0


def _spec(job: Job, payload: ModelPayload) -> LabelSpec:
    """What the actors get: the options, the decoding limits and the model's input spec — read
    here from the file's metadata (nothing compiled), so a model that cannot run as asked fails
    before Ray starts."""
    check_request(payload.source, job.options)  # what this CPU cannot run as asked: one line, now
    meta = read_metadata(payload.source, job.options)
    decode = DecodeSpec(meta.input_spec, job.limits, job.max_bytes, timeline=job.timeline)
    return LabelSpec(job.options, decode, job.top_k, job.options.max_batch)


def run(job: Job, stream: TextIO | None = None, head_lost: Callable[[str], None] | None = None) -> Summary:
    """Label every input not yet in `job.out`. Raises ValueError / OSError in one line for what
    stops the job before it starts (no input, a bad model, an OUT that is not a job's).
    `head_lost(message)`: called (from another thread) if Ray's head stops answering mid-job
    (`engine.watch_head`); the caller ends the process — the parts written are complete."""
    items = expand(job.inputs)
    if not items:
        raise ValueError("no input videos")
    payload = ModelPayload.read(job.model)
    spec = _spec(job, payload)
    parts = Parts(
        job.out,
        schema(job.timeline is not None),
        resume=job.resume,
        rows_per_part=job.rows_per_part,
        seconds=job.part_seconds,
    )
    todo = [i for i in items if i.id not in parts.done]
    progress = Progress(len(todo), skipped=len(items) - len(todo), stream=stream or sys.stderr)
    try:
        started_here = engine.connect(job.address, job.plan) if todo else False
    except BaseException:
        parts.discard()  # the job did not start: no OUT made for it
        raise
    watch = engine.watch_head(head_lost) if todo and head_lost else None
    try:
        for batch in engine.run(todo, payload, spec, job.plan):
            progress.update(parts.add(batch)["status"].to_pylist())
        parts.flush()
    finally:
        if watch is not None:
            watch.set()
        if started_here:
            import ray

            ray.shutdown()
    progress.finish()
    return Summary(progress.done, progress.skipped, progress.errors, _elapsed(progress))


def _elapsed(progress: Progress) -> float:
    return time.monotonic() - progress.started
