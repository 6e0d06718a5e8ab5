"""`sttm export`: load -> ONNX -> validate -> (TensorRT engine | OpenVINO IR -> validate) -> (Triton repo),
or load -> a PyTorch `.pt2` (a `torch.export` program, or an AOTInductor package) -> validate;
a ladder of merge ratios is one such export per rung plus `ladder.json`."""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from export.onnx import ExportError, OnnxSpec, export_onnx, metadata_for, write_metadata
from export.validate import check_merge_index, open_onnx, validate
from models.checkpoint import EXPORTED, Sidecars
from ptruntime.artifact import model_name
from runtime import BackendOptions, load_backend, read_metadata
from runtime.agreement import ValidationError, ValidationReport
from runtime.ladder_file import RungEntry, rung_name, write_ladder
from runtime.metadata import ENGINE_SUFFIXES, IR_SUFFIX, TORCH_SUFFIX, sidecar_path

Format = Literal["onnx", "tensorrt", "triton", "openvino", "torch", "aoti"]
PT2_FORMATS = ("torch", "aoti")  # what `sttm serve --backend torch` runs: a `.pt2`, validated on PyTorch
# the format a file name announces (what `sttm serve --model` will take the file for)
SUFFIX_FORMATS = {".onnx": "onnx", IR_SUFFIX: "openvino", **dict.fromkeys(ENGINE_SUFFIXES, "tensorrt"),
                  TORCH_SUFFIX: "torch"}  # fmt: skip


def format_for(out: Path, fmt: Format | None) -> Format:
    """`fmt`, or when none is given the one `out`'s suffix names (.xml an OpenVINO IR, .plan or
    .engine a TensorRT engine, .pt2 a torch.export program; anything else, a directory included,
    ONNX). ExportError when ONNX would be written under another format's suffix, which the
    server would then open as that format."""
    named = SUFFIX_FORMATS.get(out.suffix.lower())
    if fmt is None:
        return named or "onnx"
    if fmt == "onnx" and named not in (None, "onnx"):
        kind = EXPORTED[out.suffix.lower()]
        raise ExportError(f"-o {out.name}: {out.suffix} names the {kind} format, but --format onnx writes ONNX: "
                          f"name it {out.stem}.onnx, or leave --format out to write the {kind} format")  # fmt: skip
    return fmt


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


def _check_writable(path: Path) -> None:
    parent = path if path.is_dir() else path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise ExportError(f"cannot write to {parent}: {err.strerror or err}") from None


TRITON_DEFAULTS = ("python", 1, 2)  # ExportSpec's triton_runtime, instances, decoders
CALIB_CLIPS = 64  # clips an int8 OpenVINO IR is calibrated on, by default


@dataclass(frozen=True)
class ExportSpec:
    """What `sttm export` writes, checked once when it is built: a spec that exists is one
    `run_export` can carry out (save what only the machine can tell: TensorRT, a writable `out`).
    `calib`: a data set directory, or "generated", for an int8 OpenVINO IR's calibration."""

    model: str
    out: Path
    merge: str | None = None
    reduction: float | None = None
    fmt: Format | None = None  # None: from `out`'s suffix (`format_for`)
    precision: str = "fp32"
    max_batch: int = 8
    name: str = ""  # "" -> from `model` (`model_name`)
    quiet: bool = False
    triton_runtime: str = TRITON_DEFAULTS[0]
    instances: int = TRITON_DEFAULTS[1]
    decoders: int = TRITON_DEFAULTS[2]
    sidecars: Sidecars = field(default_factory=Sidecars)
    calib: str | Path | None = None
    calib_clips: int = CALIB_CLIPS
    folder: bool = field(default=False, init=False, repr=False)  # `out` is a folder: one that exists, or `dir/`

    def __post_init__(self) -> None:
        object.__setattr__(self, "folder", str(self.out).endswith(("/", os.sep)) or Path(self.out).is_dir())
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "fmt", format_for(self.out, self.fmt))
        object.__setattr__(self, "name", self.name or model_name(self.model))
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", self.name):  # a file and Triton model name, never a path
            raise ExportError(
                f"--name {self.name!r}: letters, digits, '_' and '-' only, starting with a letter or digit"
            )
        ir, int8 = self.fmt == "openvino", self.precision == "int8"
        if self.fmt == "torch" and self.precision != "fp32":
            raise ExportError(
                "--format torch stores fp32; fp16/bf16 are chosen when it is served "
                "(sttm serve --backend torch --precision auto: fp16 on a GPU)"
            )
        if self.precision == "bf16" and self.fmt != "aoti":
            raise ExportError(
                "--precision bf16 is for --format aoti; the ONNX backends and --backend torch choose bf16 "
                "when they serve (--precision bf16 on sttm serve)"
            )
        if self.fmt == "aoti" and self.precision not in ("fp32", "fp16", "bf16"):
            raise ExportError("--format aoti compiles fp32, fp16 (CUDA) or bf16 kernels, not int8")
        if self.fmt == "tensorrt" and int8:
            raise ExportError("--precision int8 is for ONNX Runtime on CPUs; TensorRT engines take fp32 or fp16")
        if ir and self.precision == "fp16":
            raise ExportError(
                "--format openvino stores fp32 or int8; bf16/fp16 are run-time precisions "
                "(sttm serve --backend openvino --precision bf16)"
            )
        if ir and int8 and self.calib is None:
            raise ExportError(
                "--precision int8 with --format openvino is calibrated: give --calib DATA (a data set "
                "directory) or --calib generated"
            )
        if self.calib is not None and not (ir and int8):
            raise ExportError("--calib is for --format openvino --precision int8")
        if self.calib is None and self.calib_clips != CALIB_CLIPS:  # it was ignored: nothing is calibrated
            raise ExportError("--calib-clips is for --calib (--format openvino --precision int8)")
        if self.calib not in (None, "generated") and not Path(self.calib).is_dir():
            raise ExportError(f"--calib {self.calib}: not a data set directory")
        if self.fmt != "triton" and (self.triton_runtime, self.instances, self.decoders) != TRITON_DEFAULTS:
            raise ExportError(  # silently ignored, it looked obeyed
                f"--triton-runtime, --instances and --triton-decoders are for --format triton, not {self.fmt}"
            )
        if self.fmt == "triton" and (
            self.triton_runtime not in ("python", "platform") or min(self.instances, self.decoders) < 1
        ):
            raise ExportError("--triton-runtime must be python or platform, --instances and --triton-decoders >= 1")

    @property
    def target(self) -> Path:
        """The file (or, for Triton, the repository) this export writes."""
        out = self.out
        if self.fmt == "triton":
            return out
        if self.fmt == "openvino":  # the ONNX file is a step on the way; the IR is what is written
            return out / f"{self.name}.xml" if self.folder else out.with_suffix(".xml")
        if self.fmt in PT2_FORMATS:
            return out / f"{self.name}{TORCH_SUFFIX}" if self.folder else out.with_suffix(TORCH_SUFFIX)
        onnx_path = out / f"{self.name}.onnx" if self.folder else out
        return onnx_path.with_suffix(".onnx") if self.fmt == "tensorrt" else onnx_path


def run_export(spec: ExportSpec) -> ExportResult:
    """Export `spec.model`, validate every file written, and return the files. Each file is
    opened for its validation as the server opens it (`runtime.load_backend`): the ONNX file on
    ONNX Runtime, a TensorRT engine on TensorRT, an OpenVINO IR on OpenVINO. int8 IRs are
    calibrated on `calib_clips` clips of `calib` (a data set directory, or "generated")."""
    progress = Progress(spec.quiet)
    builds_engine = _preflight(spec)
    model = _load(spec, progress)
    meta = metadata_for(model, spec.name, "fp32" if spec.fmt == "openvino" else spec.precision)  # an IR's: at write
    result = ExportResult(files=[])
    if spec.fmt == "torch":
        return _write_program(model, meta, spec, progress, result)
    if spec.fmt == "aoti":
        return _write_package(model, meta, spec, progress, result)
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / "model.onnx"  # moved into place only once validated
        ort_run = _export_and_validate_onnx(model, staged, meta, spec, progress, result)
        if spec.fmt == "openvino":
            return _write_ir(model, staged, spec.target, spec.precision, spec.calib, spec.calib_clips, progress, result)
        onnx_path = None if spec.fmt == "triton" else Path(shutil.move(staged, spec.target))
        onnx_file = onnx_path or staged
        engine = (
            _build_engine(model, onnx_file, meta, spec, Path(scratch), ort_run, progress, result)
            if builds_engine
            else None
        )
        if spec.fmt == "triton":
            result.files = _write_triton(spec, meta, onnx_file, engine, progress)
        else:
            result.files = [onnx_path] + ([engine, sidecar_path(engine)] if engine else [])
    return result


def _preflight(spec: ExportSpec) -> bool:
    """What only this machine can tell, before any work: TensorRT for an engine, a writable
    target. True when a TensorRT engine is built (always for `tensorrt`; for Triton, where it can)."""
    from export import tensorrt

    if spec.fmt == "tensorrt" and (reason := tensorrt.unavailable_reason()):
        raise ExportError(f"--format tensorrt: {reason}")
    if spec.fmt == "aoti":
        _aoti_placement(spec.precision)
    _check_writable(spec.target)
    return spec.fmt == "tensorrt" or (spec.fmt == "triton" and tensorrt.unavailable_reason() is None)


def _load(spec: ExportSpec, progress: Progress):
    from models import load_model

    with progress.step(f"loading {spec.model}"):
        model = load_model(spec.model, merge=spec.merge, reduction=spec.reduction, sidecars=spec.sidecars)
    progress.show(f"[sttm export] detected {model.source.name}, {model.source.dtype} weights")
    return model


def _export_and_validate_onnx(model, target: Path, meta, spec: ExportSpec, progress: Progress, result: ExportResult):
    """The ONNX file at `target`, held to PyTorch on ONNX Runtime; returns that runner."""
    with progress.step(f"exporting ONNX ({meta.merge}, {meta.gflops:.2f} GMACs/clip)"):
        export_onnx(model, target, meta, OnnxSpec(max_batch=max(64, spec.max_batch)))
    checks_merges = meta.merge_output and meta.precision == "fp32"  # low precisions may flip near-tied decisions
    with progress.step("validating with ONNX Runtime"):
        ort_run = open_onnx(target)
        result.reports.append(validate(model, ort_run, "onnxruntime-cpu", meta.precision))
        patches = check_merge_index(model, ort_run) if checks_merges else 0
    # the file records how far it is from PyTorch: a runtime's rewrite of it may use only the rest
    write_metadata(target, replace(meta, validated_diff=result.reports[-1].max_abs_diff))
    progress.show(result.reports[-1].table())
    if checks_merges:
        progress.show(f"{meta.merge_output}: equal to PyTorch on all {patches} patches")
    return ort_run


def _build_engine(
    model, onnx_file: Path, meta, spec: ExportSpec, scratch: Path, ort_run, progress: Progress, result: ExportResult
) -> Path:
    """A TensorRT engine of `onnx_file`, held to ONNX Runtime as `sttm serve` runs it; removed on a FAIL."""
    from export import tensorrt

    engine = spec.out if spec.fmt == "tensorrt" else scratch / "model.plan"
    if engine.suffix == ".onnx":
        engine = engine.with_suffix(".plan")
    with progress.step(f"building TensorRT engine ({spec.precision}, batch 1..{spec.max_batch})"):
        tensorrt.build_engine(
            onnx_file, engine, meta, spec.precision, spec.max_batch, timing_cache=engine.parent / "timing.cache"
        )
    with progress.step("validating TensorRT against ONNX Runtime"):
        try:
            served = load_backend(engine, BackendOptions("tensorrt"))
            result.reports.append(validate(model, served, "tensorrt", spec.precision, reference=ort_run))
        except ValidationError:
            for path in (engine, sidecar_path(engine)):
                path.unlink(missing_ok=True)  # never leave an engine that failed validation
            raise
    progress.show(result.reports[-1].table())
    return engine


def _write_triton(spec: ExportSpec, meta, onnx_file: Path, engine: Path | None, progress: Progress) -> list[Path]:
    from export import tensorrt
    from export.triton import write_repository

    files = write_repository(
        spec.out, spec.name, meta, onnx_file, spec.max_batch, engine, spec.triton_runtime, spec.instances, spec.decoders
    )
    if engine is None:
        progress.show(f"note: no TensorRT here ({tensorrt.unavailable_reason()}); wrote the ONNX model only")
    return files


def _write_program(model, meta, spec: ExportSpec, progress: Progress, result: ExportResult) -> ExportResult:
    """A `torch.export` program (`.pt2`, `ptruntime.artifact`), validated against the eager model as
    `sttm serve --backend torch` runs it (fp32; the merge index patch for patch); written only when it passes."""
    from ptruntime.artifact import save_program

    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / f"{spec.name}{TORCH_SUFFIX}"
        with progress.step(f"exporting a torch.export program ({meta.merge}, {meta.gflops:.2f} GMACs/clip)"):
            save_program(model, staged, meta, max(64, spec.max_batch))
        with progress.step("validating the program on PyTorch"):
            served = load_backend(staged, BackendOptions("torch", "fp32"))
            result.reports.append(validate(model, served, served.provider, "fp32"))
            patches = check_merge_index(model, served) if meta.merge_output else 0
        progress.show(result.reports[-1].table())
        if patches:
            progress.show(f"{meta.merge_output}: equal to the eager model on all {patches} patches")
        result.files = [Path(shutil.move(staged, spec.target))]
    return result


def _aoti_placement(precision: str):
    """Where an AOTInductor package is compiled for: this machine's CUDA GPU if it has one, else its
    CPU (`ptruntime.device.choose`); ExportError (one line) for a precision it cannot compute."""
    from ptruntime.device import choose, here

    try:
        return choose(here(), precision)
    except ValueError as err:
        raise ExportError(f"--format aoti: {err}") from None


def _write_package(model, meta, spec: ExportSpec, progress: Progress, result: ExportResult) -> ExportResult:
    """An AOTInductor package (`ptruntime.aoti`) for this machine's device and `spec.precision`,
    validated against the eager model as `sttm serve --backend torch` loads it (its load-time
    check included; fp32: the merge index patch for patch); written only when it passes."""
    from ptruntime.aoti import save_package, target_for

    placement = _aoti_placement(spec.precision)
    target = target_for(placement.device, spec.precision, max(64, spec.max_batch))
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / f"{spec.name}{TORCH_SUFFIX}"
        with progress.step(f"compiling an AOTInductor package for {target.describe()} ({meta.merge})"):
            save_package(model, staged, meta, target)
        with progress.step("validating the package on PyTorch"):
            served = load_backend(staged, BackendOptions("torch", spec.precision, max_batch=spec.max_batch))
            result.reports.append(validate(model, served, served.provider, spec.precision))
            fp32 = meta.merge_output and spec.precision == "fp32"  # low precisions may flip near-tied decisions
            patches = check_merge_index(model, served) if fp32 else 0
        progress.show(result.reports[-1].table())
        if patches:
            progress.show(f"{meta.merge_output}: equal to the eager model on all {patches} patches")
        result.files = [Path(shutil.move(staged, spec.target))]
    return result


def _write_ir(
    model, onnx_path: Path, out: Path, precision: str, calib, clips: int, progress: Progress, result: ExportResult
) -> ExportResult:
    """The validated ONNX file as an OpenVINO IR (int8: calibrated), validated against PyTorch
    as the server runs it; written to `out` (+ `.bin`) only when it passes."""
    from export.ir import calibration_clips, write_ir

    calibration = None
    if precision == "int8":
        source = "generated clips" if calib == "generated" else f"{calib}"
        with progress.step(f"reading {clips} calibration clips ({source})"):
            calibration = calibration_clips(model.input_spec, clips, None if calib == "generated" else calib)
        if len(calibration) < clips:  # a split smaller than --calib-clips, or clips that did not decode
            progress.show(f"[sttm export] calibrating on {len(calibration)} clips: {source} gave no more")
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
    spec: ExportSpec, reductions: list[float], eval_data: str | Path | None = None, eval_split: str = "test"
) -> ExportResult:
    """One validated model per reduction (`run_export` of `spec` at each: same weights, merge
    `spec.merge` or STTM) in the directory `spec.out`, plus `ladder.json`. File per rung:
    `{name}_r038.onnx` (TensorRT: `.plan` beside its `.onnx`; Triton: the model `{name}_r038` in
    the repository `out`). With `eval_data`, each rung's ONNX file is evaluated on that split
    (ONNX Runtime, CPU) and the accuracy and speed go into the ladder."""
    out, fmt = spec.out, spec.fmt
    if fmt == "openvino" or fmt in PT2_FORMATS:
        raise ExportError(
            "a ladder is written as ONNX (the OpenVINO and PyTorch backends serve its rungs), TensorRT "
            f"engines or a Triton repository: leave out --format {fmt}"
        )
    if out.exists() and not out.is_dir():
        raise ExportError(f"a ladder is a directory: {out} is a file")
    if fmt != "triton" and out.suffix.lower() in SUFFIX_FORMATS:
        raise ExportError(f"a ladder is a directory of models and ladder.json: -o {out.name} names one model file")
    out.mkdir(parents=True, exist_ok=True)
    result, rungs = ExportResult(files=[]), []
    for reduction in reductions:
        rung = rung_name(spec.name, reduction)
        target = out if fmt == "triton" else out / f"{rung}{'.plan' if fmt == 'tensorrt' else '.onnx'}"
        done = run_export(
            replace(
                spec,
                out=target,
                merge=spec.merge or "sttm",
                reduction=reduction,
                name=rung if fmt == "triton" else spec.name,
            )
        )
        result.files += done.files
        result.reports += done.reports
        # the rung's ONNX file; in a Triton repository, <model>/<version>/model.onnx
        onnx_file = (
            next(p for p in done.files if p.suffix == ".onnx")
            if fmt != "triton"
            else max(out.glob(f"{rung}/*/model.onnx"))
        )
        served = target if fmt == "tensorrt" else onnx_file
        measured = _measure(onnx_file, rung, eval_data, eval_split, spec.quiet) if eval_data is not None else {}
        meta = read_metadata(onnx_file)
        rungs.append(RungEntry(reduction, rung, str(served.relative_to(out)), meta.gflops, spec.precision, measured))
    result.files.append(write_ladder(out, spec.name, rungs))
    return result


def _measure(onnx_file: Path, rung: str, eval_data: str | Path, eval_split: str, quiet: bool) -> dict:
    """A rung's accuracy and speed on a split (ONNX Runtime, CPU), as ladder.json records it."""
    from export.evaluate import evaluate

    with Progress(quiet).step(f"evaluating {rung} on {eval_data} [{eval_split}]"):
        scores = evaluate(str(onnx_file), eval_data, eval_split)
    measured = {k: scores[k] for k in ("top1", "top5", "clips", "clips_per_s", "model_clips_per_s")}
    measured["runtime"] = "onnxruntime-cpu"
    return measured
