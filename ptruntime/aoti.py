"""The AOTInductor package (`sttm export --format aoti`): the served module compiled ahead of time
by `torch._inductor` (C++ kernels on the CPU, Triton kernels on a CUDA GPU) into a `.pt2`, with
no Python graph left to trace or compile when it is served.

Unlike a `torch.export` program (`ptruntime.artifact`), a package is machine code for ONE device
kind and precision: the CPU vector ISA Inductor compiled for (`avx2`, `avx512`, ...) or the CUDA
compute capability of the GPU (`9.0`), fp32 / fp16 / bf16. Its `Target` says which, in the
archive's extra file `AOTI_TARGET` beside the model's metadata (`TORCH_METADATA`), both read
without loading the compiled library; a machine that cannot run it is refused in one line
(`refusal`) before anything is loaded. The target also keeps the fp32 PyTorch model's logits on
the check clips (`runtime.agreement.moving_squares`), so the package is held to the model it was
compiled from each time it is loaded, not only at export.

The batch axis is dynamic (1..`Target.max_batch`), every other shape static, as the `.pt2`'s.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ptruntime.artifact import served_module
from runtime.agreement import moving_squares
from runtime.metadata import TORCH_METADATA, ModelMetadata

AOTI_TARGET = "sttm_aoti_target.json"
EXTRA_DIR = "extra/"  # where a PT2 archive keeps extra files (torch.export.pt2_archive.constants)
CHECK_CLIPS = 4  # the clips a package is held to at load (their fp32 logits are in its target)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Target:
    """What a package was compiled for, and what it must reproduce."""

    device: str  # "cpu" | "cuda"
    # the CPU vector ISA Inductor compiled for ("avx2", "avx512 avx512_vnni": the features it needs;
    # "scalar": none), or the CUDA compute capability ("9.0")
    arch: str
    name: str  # the GPU it was compiled on, or the CPU's features (`runtime.backends.cpu`), for messages
    precision: str  # "fp32" | "fp16" | "bf16": what its kernels compute in
    max_batch: int  # the batch axis: 1..max_batch
    torch: str  # the torch version that compiled it (its runtime must match)
    check_logits: tuple[tuple[float, ...], ...] = ()  # `[CHECK_CLIPS, classes]`: the fp32 model's

    def describe(self) -> str:
        where = f"CUDA {self.arch} ({self.name})" if self.device == "cuda" else f"the CPU ({self.arch}, {self.name})"
        return f"{where}, {self.precision}, batch 1..{self.max_batch}"


@dataclass(frozen=True)
class Here:
    """What this machine can run: the CPU vector ISAs Inductor finds, and the CUDA GPU (if any)."""

    cpu_isas: tuple[str, ...]
    cuda_arch: str = ""  # "" without a CUDA GPU
    gpu_name: str = ""
    torch: str = ""


def here() -> Here:
    """This machine, from what the hardware reports (no C++ compiler needed: a serving machine
    may have none, and running a package needs none)."""
    import platform

    from torch._inductor.cpu_vec_isa import valid_vec_isa_list, x86_isa_checker

    cuda = torch.cuda.is_available()
    x86 = platform.machine() in ("x86_64", "AMD64")
    return Here(
        cpu_isas=tuple(x86_isa_checker()) if x86 else tuple(str(isa) for isa in valid_vec_isa_list()),
        cuda_arch=".".join(map(str, torch.cuda.get_device_capability())) if cuda else "",
        gpu_name=torch.cuda.get_device_name() if cuda else "",
        torch=torch.__version__,
    )


def target_for(device: str, precision: str, max_batch: int) -> Target:
    """The target a package compiled here, now, for `device` has (without its check logits)."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    from runtime.backends.cpu import this_cpu

    if device == "cuda":
        arch, name = ".".join(map(str, torch.cuda.get_device_capability())), torch.cuda.get_device_name()
    else:
        isa = pick_vec_isa()
        arch, name = (str(isa) if isa else "scalar"), this_cpu().describe()
    return Target(device, arch, name, precision, max_batch, torch.__version__)


def refusal(target: Target, machine: Here, max_batch: int) -> str | None:
    """Why a package compiled for `target` cannot serve batches up to `max_batch` on `machine`
    (one line), or None where it can. Pure: every case is tested on any machine."""
    redo = "export it again on this machine (sttm export --format aoti), or serve the checkpoint or .pt2 program"
    if target.device == "cuda" and not machine.cuda_arch:
        return f"an AOTInductor package compiled for {target.describe()}; this machine has no CUDA GPU: {redo}"
    if target.device == "cuda" and target.arch != machine.cuda_arch:
        return (
            f"an AOTInductor package compiled for CUDA {target.arch} ({target.name}); this GPU is "
            f"{machine.cuda_arch} ({machine.gpu_name}): {redo}"
        )
    lacks = [f for f in target.arch.split() if f != "scalar" and f not in machine.cpu_isas]
    if target.device == "cpu" and lacks:
        have = ", ".join(machine.cpu_isas) or "none of them"
        return f"an AOTInductor package compiled for {target.arch} CPUs; this CPU has {have}: {redo}"
    if machine.torch and target.torch != machine.torch:
        return f"an AOTInductor package compiled by torch {target.torch}; this is torch {machine.torch}: {redo}"
    if max_batch > target.max_batch:
        return (
            f"an AOTInductor package compiled for batches 1..{target.max_batch}; the server sends up to "
            f"{max_batch} (STTM_MAX_BATCH): lower it, or export with --max-batch {max_batch}"
        )
    return None


def is_package(path: str | Path) -> bool:
    """A `.pt2` holding AOTInductor's compiled model (rather than a `torch.export` program)."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/data/aotinductor/" in name for name in archive.namelist())


def read_package(path: str | Path) -> tuple[ModelMetadata, Target]:
    """A package's metadata and target, from the archive alone (nothing compiled is loaded);
    ValueError (one line) where either is missing."""
    path = Path(path)
    with zipfile.ZipFile(path) as archive:
        extras = {name.rsplit("/", 1)[-1]: name for name in archive.namelist() if f"/{EXTRA_DIR}" in name}
        if TORCH_METADATA not in extras or AOTI_TARGET not in extras:
            raise ValueError(f"{path}: an AOTInductor package without sttm's metadata: export it with sttm export")
        meta = json.loads(archive.read(extras[TORCH_METADATA]))
        target = json.loads(archive.read(extras[AOTI_TARGET]))
    logits = tuple(tuple(row) for row in target.pop("check_logits"))
    return ModelMetadata.from_dict(meta), Target(**target, check_logits=logits)


def check_clips(meta: ModelMetadata) -> np.ndarray:
    """`[CHECK_CLIPS, 3, T, S, S]`: the clips a package is held to (at export, and at each load)."""
    return moving_squares(meta.input_spec, CHECK_CLIPS, seed=7)


def save_package(model: nn.Module, path: str | Path, meta: ModelMetadata, target: Target) -> Path:
    """Compile the served module of `model` (`VideoClassifier`, fp32, on the CPU) with AOTInductor
    for `target` into `path` (`.pt2`), with `meta` and `target` (its check logits filled in) inside.

    Shapes: the program takes `[B, 3, T, S, S]` in the target's precision on its device,
    B in 1..`target.max_batch`."""
    path = Path(path)
    module = served_module(model, meta)
    videos = torch.from_numpy(check_clips(meta))
    with torch.no_grad():
        out = module(videos)
    logits = (out[0] if isinstance(out, tuple) else out).tolist()  # (CHECK_CLIPS, classes), fp32 on the CPU
    dtype, device = DTYPES[target.precision], torch.device(target.device)
    compiled = copy.deepcopy(module).to(device, dtype)  # `model` stays fp32 on the CPU
    cfg = meta.input_spec
    example = torch.zeros(2, 3, cfg.frames, cfg.size, cfg.size, device=device, dtype=dtype)  # (B, 3, T, S, S)
    batch = torch.export.Dim("batch", min=1, max=target.max_batch)
    with torch.no_grad():
        program = torch.export.export(compiled, (example,), dynamic_shapes={"video": {0: batch}}, strict=False)
        with tempfile.TemporaryDirectory() as scratch:  # AOTInductor wants a path ending in .pt2
            staged = Path(scratch) / "package.pt2"
            torch._inductor.aoti_compile_and_package(program, package_path=str(staged))
            _add_extras(staged, {TORCH_METADATA: asdict(meta), AOTI_TARGET: {**asdict(target), "check_logits": logits}})
            shutil.move(staged, path)
    return path


def _add_extras(package: Path, files: dict[str, dict]) -> None:
    """Append JSON files to the archive's extra files (torch's own loader lists them too)."""
    with zipfile.ZipFile(package) as archive:
        root = archive.namelist()[0].split("/")[0]
    with zipfile.ZipFile(package, "a") as archive:
        for name, content in files.items():
            archive.writestr(f"{root}/{EXTRA_DIR}{name}", json.dumps(content))


def load_package(path: str | Path, max_batch: int, machine: Here | None = None):
    """A package -> (its compiled model, callable like the module: `[B, 3, T, S, S]` -> outputs,
    its metadata, its target); ValueError (one line) where this machine cannot run it."""
    meta, target = read_package(path)
    if (why := refusal(target, machine or here(), max_batch)) is not None:
        raise ValueError(f"{path}: {why}")
    return load_compiled(path, target), meta, target


def load_compiled(path: str | Path, target: Target):
    """The compiled model of a package already read and found runnable here (`read_package`,
    `refusal`); ValueError (one line) where torch cannot load it."""
    try:  # single-threaded on CUDA: the backend captures it in CUDA graphs
        return torch._inductor.aoti_load_package(str(path), run_single_threaded=target.device == "cuda")
    except Exception as err:  # noqa: BLE001 - torch raises many types for a package it cannot load
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ValueError(f"cannot load {path} ({target.describe()}): {first}") from None
