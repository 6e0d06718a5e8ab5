"""`sttm export`: load -> ONNX -> validate -> (TensorRT engine | OpenVINO IR -> validate) -> (Triton repo);
a ladder of merge ratios is one such export per rung plus `ladder.json`."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from export.onnx import ExportError, OnnxSpec, export_onnx, metadata_for, read_metadata
from export.validate import check_merge_index, open_onnx, validate
from models.checkpoint import Sidecars
from runtime import BackendOptions, load_backend
from runtime.agreement import ValidationError, ValidationReport
from runtime.ladder_file import RungEntry, rung_name, write_ladder
from runtime.metadata import sidecar_path

Format = Literal["onnx", "tensorrt", "triton", "openvino"]


@dataclass
class Progress:
    """Stage lines with timings on stderr; silent with quiet=True."""

    quiet: bool = False

    @contextmanager
    def step(self, what: str):
        start = time.perf_counter()
        if not self.quiet:
            print(f"[sttm export] {what} ...", file=sys.stderr, flush=True)
        yield
        if not self.quiet:
            print(f"[sttm export] {what}: done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)

    def show(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


@dataclass
class ExportResult:
    files: list[Path]
    reports: list[ValidationReport] = field(default_factory=list)


def model_name(ref: str) -> str:
    stem = Path(ref.rstrip("/")).stem if ("/" in ref or Path(ref).exists()) else ref
    return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "model"


def _check_writable(path: Path) -> None:
    parent = path if path.is_dir() else path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise ExportError(f"cannot write to {parent}: {err.strerror or err}") from None


def run_export(
    model_ref: str,
    out: str | Path,
    merge: str | None = None,
    reduction: float | None = None,
    fmt: Format = "onnx",
    precision: str = "fp32",
    max_batch: int = 8,
    name: str | None = None,
    quiet: bool = False,
    triton_runtime: str = "python",
    instances: int = 1,
    decoders: int = 2,
    sidecars: Sidecars | None = None,
    calib: str | Path | None = None,
    calib_clips: int = 64,
) -> ExportResult:
    """Export `model_ref`, validate every file written, and return the files. Each file is
    opened for its validation as the server opens it (`runtime.load_backend`): the ONNX file on
    ONNX Runtime, a TensorRT engine on TensorRT, an OpenVINO IR on OpenVINO. int8 IRs are calibrated on `calib_clips`
    clips of the data set directory `calib`, or on generated clips with `calib="generated"`."""
    from export import tensorrt
    from models import load_model

    progress = Progress(quiet)
    out = Path(out)
    name = name or model_name(model_ref)
    if fmt == "tensorrt" and precision == "int8":
        raise ExportError("--precision int8 is for ONNX Runtime on CPUs; TensorRT engines take fp32 or fp16")
    ir = fmt == "openvino"
    if ir and precision == "fp16":
        raise ExportError("--format openvino stores fp32 or int8; bf16/fp16 are run-time precisions "
                          "(sttm serve --backend openvino --precision bf16)")  # fmt: skip
    if ir and precision == "int8" and calib is None:
        raise ExportError("--precision int8 with --format openvino is calibrated: give --calib DATA (a data set "
                          "directory) or --calib generated")  # fmt: skip
    if calib is not None and not (ir and precision == "int8"):
        raise ExportError("--calib is for --format openvino --precision int8")
    if calib not in (None, "generated") and not Path(calib).is_dir():
        raise ExportError(f"--calib {calib}: not a data set directory")
    if fmt == "tensorrt" and (reason := tensorrt.unavailable_reason()):
        raise ExportError(f"--format tensorrt: {reason}")
    builds_engine = fmt == "tensorrt" or (fmt == "triton" and tensorrt.unavailable_reason() is None)
    if fmt == "triton" and (triton_runtime not in ("python", "platform") or min(instances, decoders) < 1):
        raise ExportError("--triton-runtime must be python or platform, --instances and --triton-decoders >= 1")
    if fmt == "triton":
        onnx_path, repo = None, out
    elif ir:  # the ONNX file is a step on the way; the IR is what is written
        onnx_path, ir_path = None, out / f"{name}.xml" if out.is_dir() else out.with_suffix(".xml")
    else:
        onnx_path = out / f"{name}.onnx" if out.is_dir() else out
        if fmt == "tensorrt" and onnx_path.suffix != ".onnx":
            onnx_path = onnx_path.with_suffix(".onnx")
    _check_writable(out if fmt == "triton" else ir_path if ir else onnx_path)

    with progress.step(f"loading {model_ref}"):
        model = load_model(model_ref, merge=merge, reduction=reduction, sidecars=sidecars or Sidecars())
    progress.show(f"[sttm export] detected {model.source.name}, {model.source.dtype} weights")
    meta = metadata_for(model, name, "fp32" if ir else precision)  # an IR's precision is set when it is written
    result = ExportResult(files=[])
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "model.onnx"  # moved into place only once validated
        with progress.step(f"exporting ONNX ({meta.merge}, {meta.gflops:.2f} GMACs/clip)"):
            export_onnx(model, target, meta, OnnxSpec(max_batch=max(64, max_batch)))
        with progress.step("validating with ONNX Runtime"):
            ort_run = open_onnx(target)
            result.reports.append(validate(model, ort_run, "onnxruntime-cpu", meta.precision))
            if meta.merge_output and meta.precision == "fp32":  # low precisions may flip near-tied decisions
                patches = check_merge_index(model, ort_run)
        progress.show(result.reports[-1].table())
        if meta.merge_output and meta.precision == "fp32":
            progress.show(f"{meta.merge_output}: equal to PyTorch on all {patches} patches")
        if ir:
            return _write_ir(model, target, ir_path, precision, calib, calib_clips, progress, result)
        if onnx_path:
            target = Path(shutil.move(target, onnx_path))
        engine = None
        if builds_engine:
            engine = out if fmt == "tensorrt" else Path(scratch) / "model.plan"
            if engine.suffix == ".onnx":
                engine = engine.with_suffix(".plan")
            with progress.step(f"building TensorRT engine ({precision}, batch 1..{max_batch})"):
                tensorrt.build_engine(target, engine, meta, precision, max_batch,
                                      timing_cache=engine.parent / "timing.cache")  # fmt: skip
            with progress.step("validating TensorRT against ONNX Runtime"):
                try:
                    served = load_backend(engine, BackendOptions("tensorrt"))  # as `sttm serve` runs it
                    result.reports.append(validate(model, served, "tensorrt", precision, reference=ort_run))
                except ValidationError:
                    for path in (engine, sidecar_path(engine)):
                        path.unlink(missing_ok=True)  # never leave an engine that failed validation
                    raise
            progress.show(result.reports[-1].table())
        if fmt == "triton":
            from export.triton import write_repository

            result.files = write_repository(
                repo, name, meta, target, max_batch, engine, triton_runtime, instances, decoders
            )
            if engine is None:
                progress.show(f"note: no TensorRT here ({tensorrt.unavailable_reason()}); wrote the ONNX model only")
        else:
            result.files = [onnx_path] + ([engine, sidecar_path(engine)] if engine else [])
    return result


def _write_ir(model, onnx_path: Path, out: Path, precision: str, calib, clips: int, progress: Progress,
              result: ExportResult) -> ExportResult:  # fmt: skip
    """The validated ONNX file as an OpenVINO IR (int8: calibrated), validated against PyTorch
    as the server runs it; written to `out` (+ `.bin`) only when it passes."""
    from export.ir import calibration_clips, write_ir

    calibration = None
    if precision == "int8":
        source = "generated clips" if calib == "generated" else f"{calib}"
        with progress.step(f"reading {clips} calibration clips ({source})"):
            calibration = calibration_clips(model.input_spec, clips, None if calib == "generated" else calib)
    scratch = onnx_path.parent / "ir"
    scratch.mkdir()
    with progress.step(f"writing the OpenVINO IR ({precision}{', NNCF' if calibration is not None else ''})"):
        staged = write_ir(onnx_path, scratch / out.name, calibration, progress.quiet)
    with progress.step("validating the OpenVINO IR"):
        # as the server runs it in `precision`, unchecked at load: held to PyTorch here
        served = load_backend(staged, BackendOptions("openvino", precision, check=False))
        result.reports.append(validate(model, served, "openvino", precision))
    progress.show(result.reports[-1].table())
    result.files = [
        Path(shutil.move(staged, out)),
        Path(shutil.move(staged.with_suffix(".bin"), out.with_suffix(".bin"))),
    ]
    return result


def run_ladder_export(
    model_ref: str,
    out: str | Path,
    reductions: list[float],
    merge: str | None = None,
    fmt: Format = "onnx",
    precision: str = "fp32",
    max_batch: int = 8,
    name: str | None = None,
    quiet: bool = False,
    eval_data: str | Path | None = None,
    eval_split: str = "test",
    **options,
) -> ExportResult:
    """One validated model per reduction (`run_export` each: same weights, merge `merge` or
    STTM) in the directory `out`, plus `out/ladder.json`. File per rung: `{name}_r038.onnx`
    (TensorRT: `.plan` beside its `.onnx`; Triton: the model `{name}_r038` in the repository
    `out`). With `eval_data`, each rung's ONNX file is evaluated on that split (ONNX Runtime,
    CPU) and the accuracy and speed go into the ladder."""
    from export.evaluate import evaluate

    out, name = Path(out), name or model_name(model_ref)
    if fmt == "openvino":
        raise ExportError("a ladder is written as ONNX (the OpenVINO backend serves its rungs), TensorRT engines "
                          "or a Triton repository: leave out --format openvino")  # fmt: skip
    if out.exists() and not out.is_dir():
        raise ExportError(f"a ladder is a directory: {out} is a file")
    out.mkdir(parents=True, exist_ok=True)
    result, rungs = ExportResult(files=[]), []
    for reduction in reductions:
        rung = rung_name(name, reduction)
        target = out if fmt == "triton" else out / f"{rung}{'.plan' if fmt == 'tensorrt' else '.onnx'}"
        done = run_export(model_ref, target, merge=merge or "sttm", reduction=reduction, fmt=fmt,
                          precision=precision, max_batch=max_batch, name=rung if fmt == "triton" else name,
                          quiet=quiet, **options)  # fmt: skip
        result.files += done.files
        result.reports += done.reports
        # the rung's ONNX file; in a Triton repository, <model>/<version>/model.onnx
        onnx_file = (
            next(p for p in done.files if p.suffix == ".onnx")
            if fmt != "triton"
            else max(out.glob(f"{rung}/*/model.onnx"))
        )
        served = target if fmt == "tensorrt" else onnx_file
        measured = {}
        if eval_data is not None:
            with Progress(quiet).step(f"evaluating {rung} on {eval_data} [{eval_split}]"):
                scores = evaluate(str(onnx_file), eval_data, eval_split)
            measured = {k: scores[k] for k in ("top1", "top5", "clips", "clips_per_s", "model_clips_per_s")}
            measured["runtime"] = "onnxruntime-cpu"
        meta = read_metadata(onnx_file)
        rungs.append(RungEntry(reduction, rung, str(served.relative_to(out)), meta.gflops, precision, measured))
    result.files.append(write_ladder(out, name, rungs))
    return result
