"""The per-CPU choices, for every x86-64 kind with fake flags (so each is tested on any machine):
runtime, precision, and whether an int8 file's weights compute exactly."""

from __future__ import annotations

import pytest

from runtime.backends.cpu import (
    CpuFeatures,
    auto_plan,
    choose_precision,
    choose_runtime,
    held_to,
    int8_weights_problem,
    parse_cpuinfo,
    this_cpu,
)

BASE = {"sse4_2", "avx", "fma", "f16c"}
# (name, flags, kind, vnni, bf16 units, fp16 units)
KINDS = {
    "epyc-zen3": (BASE | {"avx2"}, "avx2", False, False, False),
    "skylake-sp": (BASE | {"avx2", "avx512f", "avx512bw"}, "avx512", False, False, False),
    "cascade-lake": (BASE | {"avx2", "avx512f", "avx512_vnni"}, "avx512", True, False, False),
    "alder-lake": (BASE | {"avx2", "avx_vnni"}, "avx2", True, False, False),
    "cooper-lake": (BASE | {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "avx512", True, True, False),
    "sapphire-rapids": (
        BASE | {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"},
        "amx",
        True,
        True,
        True,
    ),  # fmt: skip
    "epyc-zen5": (  # AMD EPYC family 26 as /proc/cpuinfo lists it: AVX-512 with VNNI and bf16, no AMX
        BASE | {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_vp2intersect"},
        "avx512",
        True,
        True,
        False,
    ),  # fmt: skip
    "old": ({"sse4_2"}, "baseline", False, False, False),
}


def cpu(name: str) -> CpuFeatures:
    return CpuFeatures(frozenset(KINDS[name][0]))


@pytest.mark.parametrize("name", KINDS)
def test_features_of_every_kind(name):
    _, kind, vnni, bf16, fp16 = KINDS[name]
    features = cpu(name)
    assert (features.kind, features.vnni, features.bf16, features.fp16) == (kind, vnni, bf16, fp16)
    assert features.describe().startswith({"amx": "AMX", "avx512": "AVX-512", "avx2": "AVX2"}.get(kind, "no AVX2"))


def test_cpuinfo_is_parsed_from_its_flags_line():
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 fma\nbugs\t\t: sysret_ss_attrs\n"
    assert parse_cpuinfo(text) == CpuFeatures(frozenset({"fpu", "avx2", "fma"}))
    assert parse_cpuinfo("no flags here") == CpuFeatures()
    assert this_cpu().kind in ("amx", "avx512", "avx2", "baseline")  # this machine, whatever it is


@pytest.mark.parametrize("name", KINDS)
def test_auto_runtime_is_openvino_on_avx512_and_onnxruntime_below(name):
    """Where each was measured the faster: OpenVINO on AVX-512 / AMX (bf16 or not), ONNX Runtime
    on AVX2; an int8 ONNX file on ONNX Runtime everywhere."""
    choice = choose_runtime(cpu(name), openvino_installed=True)
    assert choice.value == ("openvino" if KINDS[name][1] in ("avx512", "amx") else "onnxruntime")
    assert choose_runtime(cpu(name), openvino_installed=True, stored="int8").value == "onnxruntime"
    assert choice.reason  # always says why
    assert choose_runtime(cpu(name), openvino_installed=False).value == "onnxruntime"


@pytest.mark.parametrize("name", KINDS)
def test_precision_per_cpu(name):
    features, (_, _, _, bf16, fp16) = cpu(name), KINDS[name]
    assert choose_precision(features, "auto", "fp32").value == ("bf16" if bf16 else "fp32")
    assert choose_precision(features, "fp32", "fp32").value == "fp32"
    if bf16:
        assert choose_precision(features, "bf16", "fp32").value == "bf16"
    elif fp16:
        assert choose_precision(features, "bf16", "fp32").value == "fp16"
    else:
        with pytest.raises(ValueError, match="neither bf16 nor fp16 units .* --precision fp32"):
            choose_precision(features, "bf16", "fp32")
    if not fp16:
        with pytest.raises(ValueError, match="no fp16 units"):
            choose_precision(features, "fp16", "fp32")
    # int8 is what a file stores, on every CPU
    assert choose_precision(features, "auto", "int8").value == "int8"
    with pytest.raises(ValueError, match="quantised to int8"):
        choose_precision(features, "fp32", "int8")
    with pytest.raises(ValueError, match="statically quantised model"):
        choose_precision(features, "int8", "fp32")


@pytest.mark.parametrize("name", KINDS)
def test_int8_weights_are_refused_only_where_they_saturate(name):
    features, vnni = cpu(name), KINDS[name][2]
    assert int8_weights_problem(features, 63) is None  # 7-bit weights: exact everywhere
    assert int8_weights_problem(features, 64) is None  # 255 x 64 x 2 = 32640 still fits
    problem = int8_weights_problem(features, 127)
    assert (problem is None) == vnni
    if problem:
        assert "without VNNI" in problem and "export it again" in problem and "\n" not in problem


def test_the_plan_sttm_info_shows():
    amx, epyc = auto_plan(cpu("sapphire-rapids"), True), auto_plan(cpu("epyc-zen3"), True)
    assert (amx["backend"], amx["precision"]) == ("openvino", "bf16")
    assert (epyc["backend"], epyc["precision"]) == ("onnxruntime", "fp32")
    assert "without AVX-512" in epyc["reason"] and epyc["cpu"].startswith("AVX2")
    assert amx["reason"].count(amx["cpu"]) == 1  # it was named by the runtime's reason and the precision's
    zen5, cascade = auto_plan(cpu("epyc-zen5"), True), auto_plan(cpu("cascade-lake"), True)
    assert (zen5["backend"], zen5["precision"]) == ("openvino", "bf16") and "bf16 units" in zen5["reason"]
    assert (cascade["backend"], cascade["precision"]) == ("openvino", "fp32")
    assert "faster fp32 runtime on AVX-512" in cascade["reason"] and "no bf16 units" in cascade["reason"]


def test_held_to_a_lower_instruction_set_the_choices_follow_it():
    """`ONEDNN_MAX_CPU_ISA` (honoured by OpenVINO) hides what is above it: an AMX machine held to
    AVX2 decides as an AVX2-only one, so its AVX2 paths can be tested there."""
    amx = cpu("sapphire-rapids")
    assert held_to(amx, "AVX2").kind == "avx2" and not held_to(amx, "avx2").vnni
    assert choose_runtime(held_to(amx, "AVX2"), True).value == "onnxruntime"
    assert choose_runtime(held_to(amx, "AVX512_CORE"), True).value == "openvino"
    vnni = held_to(amx, "AVX512_CORE_VNNI")
    assert (vnni.kind, vnni.vnni, vnni.bf16) == ("avx512", True, False)
    assert held_to(amx, "AVX512_CORE_BF16").bf16 and held_to(amx, "AVX512_CORE_BF16").kind == "avx512"
    assert held_to(amx, "") == amx and held_to(amx, "NOT_AN_ISA") == amx
