"""The pipeline's second stage: a pool of actors, each holding one runtime `Backend`, labelling
batches of decoded videos — the same postprocessing as `sttm predict` (views averaged after
softmax, top-k; `--timeline`: windows and the segment rule of `runtime.segments`).

The model travels with the job (`ModelPayload`: the file's bytes, and its sidecars, put in
Ray's object store once); the first actor on a machine writes it to a folder named by its
content (`ModelPayload.unpack`) and every actor there opens it with `runtime.load_backend`, so
workers need no copy of the model and no shared disk for it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from label.decode import DecodeSpec, failure, open_source, pixels_of
from label.rows import error_row, table
from media import probe
from media.sampling import window_starts
from media.stream import read_windows
from media.transforms import normalize
from runtime.backends import Backend, BackendOptions, load_backend
from runtime.ladder_file import is_ladder, read_ladder
from runtime.metadata import ENGINE_SUFFIXES, IR_SUFFIX, sidecar_path
from runtime.postprocess import average_views, softmax, top_k
from runtime.segments import segments


@dataclass(frozen=True)
class ModelPayload:
    """A model file and the files it needs beside it, as bytes, with the name it answers by."""

    main: str  # the file to open, among `files`
    files: dict[str, bytes]
    source: Path  # where `main` was read from (on the driver's machine)
    name: str  # a ladder's name, else the file's metadata name ("" until opened)
    reduction: float | None  # a ladder rung's nominal reduction, else the file's metadata

    def unpack(self, root: Path | None = None) -> Path:
        """The files in a folder named by their content (`$TMPDIR/sttm-label-models/<sha256>`),
        written once per machine and model (each file under a temporary name, then renamed):
        actors that start, die and restart share it, and a killed job leaves no copy behind."""
        digest = hashlib.sha256()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        folder = (root or Path(tempfile.gettempdir()) / "sttm-label-models") / digest.hexdigest()[:32]
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            if not (folder / name).is_file():
                temp = folder / f".{name}.{os.getpid()}.tmp"
                temp.write_bytes(data)
                os.replace(temp, folder / name)
        return folder

    @classmethod
    def read(cls, path: str | Path) -> ModelPayload:
        """A model file (with its `.bin` or engine sidecar), or a ladder's least-merged rung —
        what `sttm predict` runs on a ladder without a latency target. ValueError in one line."""
        path = Path(path)
        name, reduction = "", None
        if path.is_dir():
            if not is_ladder(path):
                raise ValueError(f"{path} is a directory without ladder.json: label with a model file or a ladder")
            name, rungs = read_ladder(path)
            path, reduction = path / rungs[0].file, rungs[0].reduction
        if not path.is_file():
            raise ValueError(f"model file {path} does not exist")
        extra = []
        if path.suffix == IR_SUFFIX:
            extra.append(path.with_suffix(".bin"))
        if path.suffix in ENGINE_SUFFIXES:
            extra.append(sidecar_path(path))
        files = {p.name: p.read_bytes() for p in (path, *extra) if p.is_file()}
        return cls(path.name, files, path, name, reduction)


@dataclass(frozen=True)
class LabelSpec:
    options: BackendOptions
    decode: DecodeSpec
    top_k: int = 5
    max_batch: int = 8  # clips (or timeline windows) per model call


class Labeller:
    """A Ray Data actor: `STAGED` batches in, output rows (`label.rows`) out."""

    def __init__(self, payload, spec: LabelSpec) -> None:
        if not isinstance(payload, ModelPayload):  # an object reference: fetched once, here
            import ray

            payload = ray.get(payload)
        self.spec = spec
        self.backend: Backend = load_backend(payload.unpack() / payload.main, spec.options)
        self.backend.warm_up((1,))
        meta = self.backend.meta
        reduction = meta.reduction if payload.reduction is None else payload.reduction
        self.answer = {"model": payload.name or meta.name, "reduction": reduction, "precision": self.backend.precision}

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        if self.spec.decode.timeline is not None:
            out = [self.timeline(r) if r["status"] == "ok" else _error(r) for r in rows]
        else:
            out = self.classify(rows)
        return table(out, self.spec.decode.timeline is not None)

    def _run(self, tensor: np.ndarray) -> tuple[np.ndarray, float]:
        """`[n, 3, T, S, S]` in calls of at most `max_batch` -> logits `[n, classes]`, seconds."""
        started = time.perf_counter()
        step = self.spec.max_batch
        logits = np.concatenate([self.backend(tensor[i : i + step]) for i in range(0, len(tensor), step)])
        return logits, time.perf_counter() - started

    def classify(self, rows: list[dict]) -> list[dict]:
        """Every `ok` row's clip through the model in calls of at most `max_batch`; the others as they are."""
        meta, ok = self.backend.meta, [r for r in rows if r["status"] == "ok"]
        spec = meta.input_spec
        answers: dict[str, dict] = {}
        for start in range(0, len(ok), self.spec.max_batch):
            chunk = ok[start : start + self.spec.max_batch]
            tensor = np.concatenate([normalize(pixels_of(r["pixels"], spec), spec.mean, spec.std) for r in chunk])
            try:
                logits, seconds = self._run(tensor)  # (n, classes): one view per clip
            except Exception as err:  # noqa: BLE001 - a failed model call fails its clips' rows, as the server's batch
                answers.update((r["id"], _error({**r, **failure(err)})) for r in chunk)
                continue
            for i, r in enumerate(chunk):
                best = top_k(average_views(logits[i : i + 1]), meta.labels, self.spec.top_k)
                answers[r["id"]] = {**_kept(r), **self.answer, "inference_ms": seconds * 1000, **_columns(best)}
        return [answers.get(r["id"]) or _error(r) for r in rows]

    def timeline(self, row: dict) -> dict:
        """One video window by window (`sttm predict --timeline`): windows and segments."""
        d, meta = self.spec.decode, self.backend.meta
        w = d.timeline
        started, infer_s = time.perf_counter(), 0.0
        found: list[tuple[float, float, np.ndarray]] = []
        try:
            source = open_source(row["path"], d)
            duration_s = probe(source, d.limits).duration_s
            window_starts(duration_s, w.window_s, w.stride_s, w.max_windows)  # too many: refused before any inference
            clips = read_windows(
                source, meta.input_spec, w.window_s, w.stride_s, d.limits, timeout_s=d.limits.decode_timeout_s
            )
            pending: list = []
            for clip in [*clips, None]:
                if clip is not None:
                    pending.append(clip)
                if pending and (clip is None or len(pending) == self.spec.max_batch):
                    logits, seconds = self._run(np.concatenate([c.tensor for c in pending]))
                    infer_s += seconds
                    found += [(c.start_s, c.end_s, softmax(lo)) for c, lo in zip(pending, logits)]
                    pending = []
                if len(found) > w.max_windows:
                    return _error({**row, "status": "too_many_windows", "message": f"at most {w.max_windows} windows"})
        except Exception as err:  # noqa: BLE001 - one hostile file is one row, not the end of the job
            return _error({**row, **failure(err)})
        return {
            **_kept(row),
            **self.answer,
            **self._timeline_columns(found, meta.labels),
            "duration_s": duration_s,
            "decode_ms": (time.perf_counter() - started - infer_s) * 1000,
            "inference_ms": infer_s * 1000,
        }

    def _timeline_columns(self, found: list[tuple[float, float, np.ndarray]], labels: tuple[str, ...]) -> dict:
        w = self.spec.decode.timeline
        windows = [{"start_s": s, "end_s": e, **_columns(top_k(p, labels, self.spec.top_k))} for s, e, p in found]
        segs = segments(found, labels, w.min_score, w.min_windows)
        best = top_k(np.mean([p for _, _, p in found], 0), labels, self.spec.top_k) if found else []
        return {"windows": windows, "segments": [vars(s) for s in segs], **_columns(best)}


def _columns(predictions) -> dict:
    return {"labels": [p.label for p in predictions], "scores": [p.score for p in predictions]}


def _kept(row: dict) -> dict:
    return {k: row[k] for k in ("id", "path", "status", "message", "duration_s", "decode_ms")}


def _error(row: dict) -> dict:
    return error_row(row["id"], row["path"], row["status"], row["message"])
