"""Model runners behind one small interface: `load_backend(path, options) -> Backend`.

A backend is a function `[B, 3, T, S, S]` float32 -> logits `[B, classes]` plus the model's
metadata (what `sttm export` wrote: labels, input spec, merge). Which runtime opens a file
(`BackendOptions.kind`, `auto` by default):
- `.onnx`: on the CPU, the runtime that is fastest on this CPU kind (`backends.cpu`): OpenVINO
  (`backends.ov`) on AVX-512 CPUs (in bf16 where they have bf16 units: AMX / AVX512-BF16),
  ONNX Runtime (`backends.ort`) on AVX2-only ones and for int8 files; ONNX Runtime where a GPU
  provider (TensorRT/CUDA) is asked for;
- `.xml`: an OpenVINO IR (`sttm export --format openvino`, e.g. statically quantised to
  int8), on OpenVINO;
- `.plan` / `.engine`: a serialized TensorRT engine run directly (`backends.trt`), its
  metadata in the `<engine>.json` sidecar;
- `.pt2` (`sttm export --format torch` or `--format aoti`), a checkpoint or a built-in model name (`demo`,
  `videomae-b`, ...): PyTorch (`--backend torch`), a plugin (`backends.plugins`: the package
  `ptruntime`, above `models`, found by its entry point and never imported from here), on a
  CUDA GPU where there is one (CUDA graphs per batch size, fp16/bf16), else on the CPU.
Each runtime module is imported only when a file needs it (TensorRT exists only on NVIDIA
machines, torch not in the serving image).

Precision (`BackendOptions.precision`): what the runtime computes in. ONNX Runtime and
TensorRT run what the file stores (`sttm export --precision`); OpenVINO can run a plain
fp32 file in bf16/fp16 and runs an int8 IR, and a low run-time precision is held at load to the same rule as an export
(`runtime.agreement`) against the runtime's own fp32: a failing combination is refused,
and `auto` falls back to fp32.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from runtime.backends.cpu import Choice, choose_runtime, join_reasons, this_cpu
from runtime.backends.plugins import PluginMissingError, missing_reason, nvidia_gpu_present, plugin
from runtime.metadata import ENGINE_SUFFIXES, EXPORTED_SUFFIXES, IR_SUFFIX, TORCH_SUFFIX, ModelMetadata, read_sidecar

Kind = Literal["auto", "onnxruntime", "openvino", "tensorrt", "torch"]
Precision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
# `--backend torch` on a model it builds (a checkpoint, a name, a `.pt2` program): torch.compile's
# mode, or off. On a GPU the backend captures its own CUDA graphs (`ptruntime.graphs`) except
# under reduce-overhead, whose graphs are torch.compile's.
TorchCompile = Literal["off", "default", "max-autotune-no-cudagraphs", "reduce-overhead"]


class ModelLoadError(RuntimeError):
    """The model file cannot be served here; the message says why, in one line."""


@dataclass(frozen=True)
class BackendOptions:
    kind: Kind = "auto"
    precision: Precision = "auto"
    providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])  # ORT, in order of preference
    threads: int = 0  # intra-op threads; 0: the runtime decides
    max_batch: int = 8  # largest batch the batcher sends (engine profiles)
    cache: Path | None = None  # compiled-engine cache directory
    check: bool = True  # hold a low run-time precision to the runtime's own fp32 at load (`sttm validate`: to PyTorch)
    fuse: bool = True  # ONNX Runtime on the CPU: fused attention kernels (a graph pass at load, checked there)
    compile: TorchCompile = "off"  # --backend torch: torch.compile the model (checked against eager at load)


@dataclass(frozen=True)
class Backend:
    run: Callable[[np.ndarray], np.ndarray]  # `[B, 3, T, S, S]` float32 -> logits `[B, classes]`; thread-safe
    meta: ModelMetadata
    path: Path
    provider: str  # e.g. "onnxruntime:CPUExecutionProvider", "openvino:CPU", "tensorrt", "torch:cuda NVIDIA H200"
    precision: str = "fp32"  # what it computes in (ONNX Runtime, TensorRT: what the file stores)
    # `[B, 3, T, S, S]` -> (logits, merge_index `[B, t*h*w]` int32) in one call, where the file
    # has the output (`sttm export` of a merged model); None for older files and engines
    explain: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None
    reason: str = ""  # why this runtime and precision, in one line (`/v1/models`, `sttm info`, the page)

    def __call__(self, video: np.ndarray) -> np.ndarray:
        """`[B, 3, T, S, S]` float32 -> logits `[B, classes]`."""
        return self.run(video)

    def input_shape(self, batch: int) -> tuple[int, ...]:
        m = self.meta
        return (batch, 3, m.input_spec.frames, m.input_spec.size, m.input_spec.size)

    def warm_up(self, batches: tuple[int, ...] = (1,)) -> None:
        for b in batches:
            self(np.zeros(self.input_shape(b), np.float32))


def load_backend(path: str | Path, options: BackendOptions = BackendOptions()) -> Backend:
    """Open an exported model with the runtime `options.kind` names (or the best one here);
    on `torch`, also a checkpoint or a built-in model name (`path` as given)."""
    path = Path(path)
    kind = resolve_kind(path, options)
    if kind.value == "torch":
        backend = _torch_plugin().load(path, options)
    elif kind.value == "tensorrt":
        from runtime.backends import trt

        backend = trt.load(path)
    elif kind.value == "openvino":
        from runtime.backends import ov

        backend = ov.load(path, options)
    else:
        from runtime.backends import ort

        backend = ort.load(path, options)
    return dataclasses.replace(backend, reason=join_reasons(this_cpu(), kind.reason, backend.reason))


def read_metadata(path: str | Path, options: BackendOptions = BackendOptions()) -> ModelMetadata:
    """A model's metadata without compiling it: an ONNX file's `metadata_props`, an OpenVINO
    IR's rt_info, an engine's sidecar; what only a plugin reads (a `.pt2`, a checkpoint) is
    opened with it. `ModelLoadError` (one line) where the file has none or cannot be read."""
    path = Path(path)
    if path.suffix == IR_SUFFIX:
        from runtime.backends import ov

        return ov.read_metadata(path)
    if path.suffix not in (".onnx", *ENGINE_SUFFIXES):
        return load_backend(path, options).meta
    try:
        return _onnx_metadata(path) if path.suffix == ".onnx" else read_sidecar(path)
    except (ValueError, OSError) as err:
        raise ModelLoadError(f"{path}: {err}") from None


def _onnx_metadata(path: Path) -> ModelMetadata:
    """The file's `metadata_props`, parsed once per version of the file in this process:
    `sttm serve` asks at its check and again at load (a VideoMAE-B proto: ~0.1-0.2 s per 90 MB)."""
    stat = path.stat()
    return _parsed_metadata(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=32)
def _parsed_metadata(path: str, mtime_ns: int, size: int) -> ModelMetadata:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(path, load_external_data=False)
    except DecodeError:
        raise ValueError("not an ONNX file") from None
    return ModelMetadata.from_props({p.key: p.value for p in proto.metadata_props})


def _stored_precision(path: Path) -> str:
    """The precision an ONNX file's metadata says it stores; fp32 where it says nothing readable
    (loading it then says what is wrong)."""
    try:
        return _onnx_metadata(path).precision
    except (ValueError, OSError):
        return "fp32"


def check_request(path: str | Path, options: BackendOptions = BackendOptions()) -> None:
    """Raise `ModelLoadError` (one line) where `load_backend` would refuse what `options` ask
    of this file on this machine, without compiling anything: `sttm serve` says it and exits
    before the server starts. Where it passes, loading can still fail (a corrupt file)."""
    path = Path(path)
    kind = resolve_kind(path, options).value
    if kind == "torch":
        _torch_plugin().check(path, options)
    elif kind == "openvino" and options.precision not in ("auto", "fp32"):
        from runtime.backends import ov

        ov.decide_precision(path, options.precision)
    elif kind == "tensorrt":
        from runtime.backends import trt

        if (reason := trt.missing()) is not None:  # it was exit 3 after the server had started
            raise ModelLoadError(f"{path}: {reason}")


def runs_on_torch(path: Path) -> bool:
    """What only PyTorch runs: a `.pt2`, or anything that is not an exported file — a checkpoint
    (a file of another suffix, a directory with config.json) or a built-in model name."""
    return path.suffix == TORCH_SUFFIX or path.suffix not in EXPORTED_SUFFIXES


def prefer_torch() -> bool:
    """`auto` serves the bundled demo (a checkpoint beside its ONNX file) on PyTorch here: an
    NVIDIA GPU is present, TensorRT is not installed, and the torch plugin can load."""
    return nvidia_gpu_present() and not installed("tensorrt") and missing_reason("torch") is None


def resolve_kind(path: Path, options: BackendOptions) -> Choice:
    """`auto`: a TensorRT engine runs on TensorRT, an OpenVINO IR on OpenVINO, a `.pt2`, a
    checkpoint or a model name on PyTorch; an ONNX file on ONNX Runtime where a GPU provider is
    asked for, else on the CPU runtime that is fastest on this CPU (`cpu.choose_runtime`). A
    runtime that cannot open the file, or is not installed, is a `ModelLoadError`."""
    if options.kind in ("auto", "torch") and runs_on_torch(path):
        return _torch_choice(path, options)
    if not path.is_file():
        hint = " (checkpoints and model names run on PyTorch: --backend torch)" if runs_on_torch(path) else ""
        raise ModelLoadError(f"model file {path} {'is not a file' if path.exists() else 'does not exist'}{hint}")
    engine, ir = path.suffix in ENGINE_SUFFIXES, path.suffix == IR_SUFFIX
    kind, reason = options.kind, f"--backend {options.kind}"
    if kind == "auto":
        if engine or ir:
            kind, reason = ("tensorrt", "a TensorRT engine") if engine else ("openvino", "an OpenVINO IR")
        elif list(options.providers) != ["CPUExecutionProvider"]:
            kind, reason = "onnxruntime", f"providers {', '.join(options.providers)}"
        else:
            choice = choose_runtime(this_cpu(), installed("openvino"))
            if choice.value == "openvino" and _stored_precision(path) == "int8":  # read only where it matters
                choice = choose_runtime(this_cpu(), True, "int8")
            kind, reason = dataclasses.astuple(choice)
    what = "a TensorRT engine (.plan)" if engine else "an OpenVINO IR (.xml)" if ir else "an ONNX file"
    if kind == "torch" or runs_on_torch(path):
        what = what if kind == "torch" else "a .pt2 or a checkpoint"
        raise ModelLoadError(
            f"{path}: {what} cannot run on {kind} (--backend torch runs .pt2 exports, checkpoints and model "
            "names; the other runtimes what sttm export --format onnx/tensorrt/openvino writes)"
        )
    if engine != (kind == "tensorrt") or (ir and kind != "openvino"):
        raise ModelLoadError(
            f"{path}: {what} cannot run on {kind} (TensorRT runs engines; OpenVINO, IRs and ONNX "
            "files; ONNX Runtime, ONNX files)"
        )
    if kind == "onnxruntime":
        _check_providers(options.providers)
    if kind == "openvino" and not installed("openvino"):
        raise ModelLoadError("--backend openvino: OpenVINO is not installed (pip install openvino, in the cpu extra)")
    if kind != "openvino" and options.precision not in ("auto", "fp32"):
        raise ModelLoadError(
            f"{kind} runs the precision the file stores (sttm export --precision); "
            f"--precision {options.precision} needs --backend openvino (or torch)"
        )
    return Choice(kind, reason)


def _check_providers(providers: Sequence[str]) -> None:
    """ModelLoadError for a name ONNX Runtime does not know (a typo would be skipped as "not
    installed", and the model served on the CPU without a word)."""
    import difflib

    import onnxruntime

    known = onnxruntime.get_all_providers()
    for name in providers:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {near[0]}?" if near else f"ONNX Runtime's are {', '.join(known[:4])}, ..."
            raise ModelLoadError(f"STTM_PROVIDERS: {name!r} is not an ONNX Runtime provider ({hint})")


def _torch_choice(path: Path, options: BackendOptions) -> Choice:
    """PyTorch for what only it runs (or where it is asked for): refused, in one line, where
    torch or the plugin is missing (the serving image) or for int8."""
    if (reason := missing_reason("torch")) is not None:
        if options.kind == "auto" and not path.exists():  # a typo more likely than a model name
            raise ModelLoadError(f"model file {path} does not exist (model names run on PyTorch: {reason})")
        if options.kind == "auto" and path.suffix != TORCH_SUFFIX:  # a clip given by mistake, as often as a checkpoint
            exported = ", ".join(s for s in EXPORTED_SUFFIXES if s != TORCH_SUFFIX)
            raise ModelLoadError(f"{path}: not an exported model ({exported}); a checkpoint runs on PyTorch: {reason}")
        raise ModelLoadError(f"{path}: {reason}" if options.kind == "auto" else reason)
    if options.precision == "int8":
        raise ModelLoadError("--backend torch computes in fp32, bf16 or fp16; int8: sttm export --precision int8")
    what = "a PyTorch program (.pt2)" if path.suffix == TORCH_SUFFIX else "a checkpoint or model name"
    return Choice("torch", "--backend torch" if options.kind == "torch" else f"{what}: PyTorch runs it")


def _torch_plugin():
    try:
        return plugin("torch")
    except PluginMissingError as err:
        raise ModelLoadError(str(err)) from None


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
