"""Where the PyTorch backend runs and in what precision: a pure function of what the machine
has, so every case is tested on any machine (`choose`), and the facts of this one (`here`).

On a CUDA GPU: `auto` is fp16 (tensor cores; more mantissa than bf16), bf16 where asked and
the GPU has it, fp32 where asked; a low precision is then held at load to the same model in
fp32 on the same GPU (`runtime.agreement`), `auto` falling back to fp32 where it fails. On the
CPU: fp32, bf16 only on CPUs with bf16 units (AMX / AVX512-BF16, `runtime.backends.cpu`);
elsewhere PyTorch emulates bf16, slower than fp32. fp16 is refused on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Machine:
    cuda: bool  # a CUDA device torch can use
    cuda_bf16: bool  # it computes bf16 (Ampere and later)
    cpu_bf16: bool  # the CPU has bf16 units
    gpu_name: str = ""
    cpu: str = ""  # `CpuFeatures.describe()`, for the reasons


@dataclass(frozen=True)
class Placement:
    device: str  # "cuda" | "cpu"
    precision: str  # "fp32" | "fp16" | "bf16"
    reason: str


def choose(machine: Machine, requested: str) -> Placement:
    """The device and precision for `requested` (auto, fp32, fp16, bf16); ValueError (one line,
    naming no command: `sttm serve --backend torch` and `sttm export --format aoti` say which
    flag it was) for what this machine cannot compute."""
    if requested not in ("auto", "fp32", "fp16", "bf16"):
        raise ValueError(f"PyTorch computes in fp32, fp16 or bf16 here, not {requested}")
    if machine.cuda:
        gpu = machine.gpu_name or "the GPU"
        if requested == "bf16" and not machine.cuda_bf16:
            raise ValueError(f"--precision bf16: {gpu} does not compute bf16: use fp16")
        if requested == "auto":
            return Placement("cuda", "fp16", f"auto: fp16 on {gpu}")
        return Placement("cuda", requested, f"--precision {requested} on {gpu}")
    cpu = machine.cpu or "this CPU"
    if requested == "fp16":
        instead = "bf16 (this CPU's bf16 units) or fp32" if machine.cpu_bf16 else "fp32"
        raise ValueError(f"--precision fp16 needs a CUDA GPU; on the CPU: {instead}")
    if requested == "bf16" and not machine.cpu_bf16:
        raise ValueError(f"--precision bf16: this CPU has no bf16 units ({cpu}): use fp32")
    if requested == "auto":
        if machine.cpu_bf16:
            return Placement("cpu", "bf16", f"auto: bf16 on this CPU's bf16 units ({cpu})")
        return Placement("cpu", "fp32", f"auto: fp32 on the CPU, no CUDA GPU and no bf16 units ({cpu})")
    return Placement("cpu", requested, f"--precision {requested} on the CPU")


def for_program(placement: Placement, requested: str) -> Placement:
    """`placement` for a `torch.export` program, which computes in fp32, the precision it was traced
    in: its graph asserts each tensor's dtype (`aten._assert_tensor_metadata`), so a copy cast to
    bf16/fp16 fails at its first check. `auto` stays on the device in fp32 and says why; a low
    precision asked for is a ValueError (one line)."""
    if placement.precision == "fp32":
        return placement
    if requested != "auto":
        raise ValueError(
            f"a torch.export program (.pt2) computes in fp32, the precision it was exported in, not "
            f"--precision {requested}: serve the checkpoint itself in {requested}, or an AOTInductor package "
            f"exported with --precision {requested}"
        )
    why = "auto: fp32, a torch.export program runs in the precision it was exported in"
    return Placement(placement.device, "fp32", why)


def here() -> Machine:
    """This machine, as torch sees it."""
    import torch

    from runtime.backends.cpu import this_cpu

    cuda = torch.cuda.is_available()
    cpu = this_cpu()
    return Machine(
        cuda=cuda,
        cuda_bf16=cuda and torch.cuda.is_bf16_supported(),
        cpu_bf16=cpu.bf16,
        gpu_name=torch.cuda.get_device_name() if cuda else "",
        cpu=cpu.describe(),
    )
