"""What this CPU computes fast, and the choices that follow from it.

The flags come from the kernel (`/proc/cpuinfo`), read once. Everything else is a pure
function of `CpuFeatures`, so the choice for every CPU kind is tested on any machine:
- which runtime serves an ONNX file when none is named (`--backend auto`),
- which precision OpenVINO runs a plain fp32 file in (`--precision auto`, or one asked for),
- whether an int8 file's weights are safe on this CPU.

Why int8 weights matter: without VNNI (AVX2-only CPUs, AVX-512 before Cascade Lake) a u8 x s8
dot product goes through `vpmaddubsw`, whose 16-bit pair sums saturate once weights use the
full int8 range (255 x 127 x 2 > 32767) — the logits of a full-range int8 model were off by
0.46-0.49 on an AVX2-only EPYC. 7-bit weights (-64..63: 255 x 64 x 2 = 32640) never
saturate, so `sttm export` writes them on every CPU (ONNX Runtime's `reduce_range`, NNCF's
overflow fix) and a file with 8-bit weights is refused at load where it would saturate.
VNNI (`vpdpbusd`) and AMX accumulate in 32 bits: any weights are exact there.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

SAFE_WEIGHT = 64  # the largest |int8 weight| whose u8 x s8 pair sums fit 16 bits (255 x 64 x 2 = 32640)


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction-set flags of a CPU (as `/proc/cpuinfo` names them)."""

    flags: frozenset[str] = frozenset()

    @property
    def vnni(self) -> bool:
        """int8 dot products accumulated in 32 bits (no saturation)."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"})

    @property
    def bf16(self) -> bool:
        """bf16 units: AMX tiles or AVX512-BF16 dot products (OpenVINO runs bf16 on them)."""
        return bool(self.flags & {"avx512_bf16", "amx_bf16"})

    @property
    def fp16(self) -> bool:
        """fp16 arithmetic units (not only the f16c conversions)."""
        return bool(self.flags & {"avx512_fp16", "amx_fp16"})

    @property
    def kind(self) -> str:
        """The widest vector unit: `amx`, `avx512`, `avx2` or `baseline`."""
        if "amx_tile" in self.flags:
            return "amx"
        if "avx512f" in self.flags:
            return "avx512"
        return "avx2" if "avx2" in self.flags else "baseline"

    def describe(self) -> str:
        """One phrase, e.g. `AVX2 (no VNNI, no bf16 units)`."""
        names = {"amx": "AMX", "avx512": "AVX-512", "avx2": "AVX2", "baseline": "no AVX2"}
        has = [name for name, on in (("VNNI", self.vnni), ("bf16 units", self.bf16), ("fp16 units", self.fp16)) if on]
        lacks = [f"no {name}" for name, on in (("VNNI", self.vnni), ("bf16 units", self.bf16)) if not on]
        return f"{names[self.kind]} ({', '.join(has + lacks)})"


@dataclass(frozen=True)
class Choice:
    """A decision and the one-line reason shown beside it (`/v1/models`, `sttm info`, the page)."""

    value: str
    reason: str


# oneDNN's `ONEDNN_MAX_CPU_ISA` (which OpenVINO's CPU plugin honours) -> the flags it hides
_ABOVE_AVX2 = ("avx512", "amx_", "avx_vnni")
HIDDEN_ABOVE = {
    "AVX2": _ABOVE_AVX2,
    "AVX2_VNNI": ("avx512", "amx_"),
    "AVX512_CORE": ("avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_", "avx_vnni"),
    "AVX512_CORE_VNNI": ("avx512_bf16", "avx512_fp16", "amx_"),
    "AVX512_CORE_BF16": ("avx512_fp16", "amx_"),
    "AVX512_CORE_FP16": ("amx_",),
}


@functools.cache
def this_cpu() -> CpuFeatures:
    """This machine's CPU (Linux), held to `ONEDNN_MAX_CPU_ISA` where that is set (so the
    choices match the kernels OpenVINO uses); no flags where `/proc/cpuinfo` cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return CpuFeatures()
    return held_to(parse_cpuinfo(text), os.environ.get("ONEDNN_MAX_CPU_ISA", ""))


def held_to(cpu: CpuFeatures, isa: str) -> CpuFeatures:
    """`cpu` as seen with oneDNN held to `isa` (`AVX2`, `AVX512_CORE_VNNI`, ...): the flags above
    it hidden. Unknown or empty: unchanged."""
    hidden = HIDDEN_ABOVE.get(isa.upper())
    if hidden is None:
        return cpu
    return CpuFeatures(frozenset(f for f in cpu.flags if not f.startswith(hidden)))


def parse_cpuinfo(text: str) -> CpuFeatures:
    """The first processor's `flags` line of a `/proc/cpuinfo` text."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return CpuFeatures(frozenset(value.split()))
    return CpuFeatures()


def choose_runtime(cpu: CpuFeatures, openvino_installed: bool, stored: str = "fp32") -> Choice:
    """The runtime for an ONNX file on the CPU, by what was measured per CPU kind (VideoMAE-B,
    model only, 2 cores): OpenVINO where it runs bf16 on the CPU's units (AMX, AVX512-BF16: STTM
    1.5x the best unmerged runtime on AMX) and on every AVX-512 CPU, where its fp32 is the faster
    too (AMD Zen 5, and held by `ONEDNN_MAX_CPU_ISA` to AVX-512 with and without VNNI: unmerged
    1.11-1.15x ONNX Runtime, STTM 1.06-1.13x); ONNX Runtime on AVX2-only CPUs, where its fp32 is
    the faster (EPYC Zen 3: STTM 1771 vs 1953 ms, unmerged 3023 vs 3255 ms), and for int8 files
    (its MatMulInteger is what `sttm export` validated)."""
    if stored == "int8":
        return Choice("onnxruntime", "an int8 ONNX file runs on ONNX Runtime, as it was validated")
    if not openvino_installed:
        return Choice("onnxruntime", "OpenVINO is not installed")
    if cpu.bf16:
        return Choice("openvino", f"OpenVINO runs bf16 on this CPU's bf16 units ({cpu.describe()})")
    if cpu.kind in ("avx512", "amx"):
        return Choice("openvino", f"OpenVINO is the faster fp32 runtime on AVX-512 ({cpu.describe()})")
    return Choice("onnxruntime", f"ONNX Runtime is the faster fp32 runtime without AVX-512 ({cpu.describe()})")


def choose_precision(cpu: CpuFeatures, requested: str, stored: str) -> Choice:
    """OpenVINO's run-time precision for a file that stores `stored`; `requested` is `auto`,
    `fp32`, `bf16`, `fp16` or `int8`. `auto`: bf16 where the CPU has bf16 units, else fp32; bf16
    asked for without them: fp16 where the CPU computes fp16. An int8 file runs int8 and only
    int8. Raises ValueError (one line) for what this CPU or file cannot run."""
    if stored == "int8":
        if requested not in ("auto", "int8"):
            raise ValueError(f"the model is quantised to int8: it runs --precision int8 (or auto), not {requested}")
        return Choice("int8", "the file is quantised to int8")
    if requested == "int8":
        raise ValueError(
            "--precision int8 on OpenVINO needs a statically quantised model: sttm export MODEL "
            "--format openvino --precision int8 --calib DATA -o OUT.xml"
        )
    if requested == "auto":
        if cpu.bf16:
            return Choice("bf16", f"auto: bf16 on this CPU's bf16 units ({cpu.describe()})")
        return Choice("fp32", f"auto: fp32, this CPU has no bf16 units ({cpu.describe()})")
    if requested == "bf16" and not cpu.bf16:
        if not cpu.fp16:
            raise ValueError(
                f"--precision bf16: this CPU has neither bf16 nor fp16 units ({cpu.describe()}): "
                "use --precision fp32 (or auto)"
            )
        return Choice("fp16", "bf16 asked for: fp16, this CPU has fp16 but no bf16 units")
    if requested == "fp16" and not cpu.fp16:
        raise ValueError(
            f"--precision fp16: this CPU has no fp16 units ({cpu.describe()}): use --precision fp32 (or auto)"
        )
    return Choice(requested, f"--precision {requested}")


def int8_weights_problem(cpu: CpuFeatures, largest_weight: int) -> str | None:
    """Why an int8 file whose largest |weight| is `largest_weight` computes wrongly on `cpu`
    (one line), or None where it is exact."""
    if cpu.vnni or largest_weight <= SAFE_WEIGHT:
        return None
    return (
        f"its int8 weights use the full range (|w| up to {largest_weight}), which saturates on a CPU without "
        f"VNNI ({cpu.describe()}): export it again with this version of sttm (7-bit weights, exact on "
        "every CPU) or serve the fp32 file"
    )


def join_reasons(cpu: CpuFeatures, *reasons: str) -> str:
    """The reasons of one decision, `; `-joined, naming the CPU once: `OpenVINO runs bf16 on
    this CPU's bf16 units (AMX (...)); auto: bf16 on this CPU's bf16 units`."""
    named, out = f" ({cpu.describe()})", []
    for reason in filter(None, reasons):
        out.append(reason.replace(named, "") if any(named in r for r in out) else reason)
    return "; ".join(out)


def auto_plan(cpu: CpuFeatures, openvino_installed: bool) -> dict[str, str]:
    """What `--backend auto --precision auto` runs an exported fp32 ONNX file with on `cpu`,
    and why (`sttm info`)."""
    runtime = choose_runtime(cpu, openvino_installed)
    if runtime.value == "openvino":
        precision = choose_precision(cpu, "auto", "fp32")
    else:
        precision = Choice("fp32", "ONNX Runtime runs what the file stores")
    return {
        "cpu": cpu.describe(),
        "backend": runtime.value,
        "precision": precision.value,
        "reason": join_reasons(cpu, runtime.reason, precision.reason),
    }
