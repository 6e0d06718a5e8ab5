"""The model runners: which runtime opens a file, OpenVINO next to ONNX Runtime, and the
load-time precision check that refuses (or, under `auto`, avoids) a combination that fails."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest

from runtime import agreement, backends
from runtime.agreement import moving_squares
from runtime.backends import BackendOptions, ModelLoadError, check_request, load_backend, resolve_kind
from runtime.backends import cpu as cpus
from service.settings import DEMO_ONNX
from tests.service.conftest import TINY_META, write_tiny_onnx

openvino = pytest.importorskip("openvino")
HAS_BF16 = cpus.this_cpu().bf16
# ONEDNN_MAX_CPU_ISA holds oneDNN below the bf16 units this CPU has: OpenVINO still sees them and
# takes a bf16 hint, which oneDNN then cannot compile ("could not create a primitive descriptor")
HELD_BELOW_BF16 = not HAS_BF16 and cpus.parse_cpuinfo(Path("/proc/cpuinfo").read_text()).bf16
AMX = cpus.CpuFeatures(frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}))
EPYC = cpus.CpuFeatures(frozenset({"avx2", "fma"}))
CASCADE_LAKE = cpus.CpuFeatures(frozenset({"avx2", "avx512f", "avx512_vnni"}))


def test_auto_picks_the_runtime_for_this_cpu_and_onnx_runtime_for_gpu_providers(tiny_onnx, tmp_path, monkeypatch):
    here = resolve_kind(tiny_onnx, BackendOptions())
    assert here == cpus.choose_runtime(cpus.this_cpu(), openvino_installed=True)  # what this CPU runs fastest
    reason = load_backend(tiny_onnx).reason
    assert reason.startswith(here.reason) and reason.count(cpus.this_cpu().describe()) <= 1  # why, the CPU once
    int8 = write_tiny_onnx(tmp_path / "int8.onnx", dataclasses.replace(TINY_META, precision="int8"))
    for fake, expected in ((AMX, "openvino"), (CASCADE_LAKE, "openvino"), (EPYC, "onnxruntime")):
        monkeypatch.setattr(backends, "this_cpu", lambda fake=fake: fake)
        assert resolve_kind(tiny_onnx, BackendOptions()).value == expected
        stays = resolve_kind(int8, BackendOptions())  # an int8 file: on the runtime `sttm export` validated it on
        assert stays.value == "onnxruntime" and ("validated" in stays.reason) == (expected == "openvino")
    gpu = BackendOptions(providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert resolve_kind(tiny_onnx, gpu).value == "onnxruntime"
    for kind in ("auto", "onnxruntime"):  # a misspelt provider was skipped as not installed: served on the CPU
        typo = BackendOptions(kind, providers=["CUDAExecutionProvder", "CPUExecutionProvider"])
        with pytest.raises(
            ModelLoadError, match=r"'CUDAExecutionProvder' is not .* \(did you mean CUDAExecutionProvider\?\)"
        ):
            resolve_kind(tiny_onnx, typo)
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"x")
    assert resolve_kind(engine, BackendOptions()).value == "tensorrt"
    with pytest.raises(ModelLoadError, match="cannot run on tensorrt"):
        resolve_kind(tiny_onnx, BackendOptions(kind="tensorrt"))
    with pytest.raises(ModelLoadError, match="cannot run on openvino"):
        resolve_kind(engine, BackendOptions(kind="openvino"))
    with pytest.raises(ModelLoadError, match="needs --backend openvino"):
        resolve_kind(tiny_onnx, BackendOptions(kind="onnxruntime", precision="bf16"))


def test_an_engine_without_tensorrt_is_refused_before_the_server_starts(tmp_path, monkeypatch):
    """`sttm serve --model m.plan` where TensorRT is not installed started the server, then exited 3."""
    from runtime.backends import trt

    engine = tmp_path / "m.plan"
    engine.write_bytes(b"x")
    real = trt.importlib.util.find_spec
    monkeypatch.setattr(trt.importlib.util, "find_spec", lambda name: None if name == "tensorrt" else real(name))
    with pytest.raises(ModelLoadError) as err:
        check_request(engine, BackendOptions())
    assert str(err.value).startswith(f"{engine}: serving an engine needs tensorrt and cuda-python (the gpu image): ")
    assert "tensorrt" in str(err.value).rsplit(":", 1)[1] and "\n" not in str(err.value)
    monkeypatch.setattr(trt, "missing", lambda: None)
    check_request(engine, BackendOptions())  # installed: left to the load (the engine itself is not read here)


def test_openvino_without_openvino_is_one_clear_error(tiny_onnx, monkeypatch):
    monkeypatch.setattr(backends, "installed", lambda module: False)
    assert resolve_kind(tiny_onnx, BackendOptions()).value == "onnxruntime"  # auto: what is there
    with pytest.raises(ModelLoadError, match="OpenVINO is not installed"):
        load_backend(tiny_onnx, BackendOptions(kind="openvino"))


def test_openvino_fp32_matches_onnx_runtime_and_reads_the_metadata(tiny_onnx):
    ov = load_backend(tiny_onnx, BackendOptions(kind="openvino", precision="fp32"))
    ort = load_backend(tiny_onnx, BackendOptions(kind="onnxruntime"))
    assert ov.meta == ort.meta and ov.provider == "openvino:CPU" and ov.precision == "fp32"
    clips = moving_squares(ov.meta.input_spec, 3)
    np.testing.assert_allclose(ov(clips), ort(clips), atol=1e-4)
    assert ov(clips[:1]).shape == (1, len(ov.meta.labels))


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 units")
def test_openvino_runs_clip_by_clip_alone_or_on_its_streams(tiny_onnx):
    """Compiled for one clip (static shapes): a batch fills the CPU's streams with as many clips
    as a multiple of the streams allows, the rest run alone on all the threads — in order, with
    the same answers as ONNX Runtime."""
    from runtime.backends import ov_compile

    served = load_backend(tiny_onnx, BackendOptions(kind="openvino", precision="fp32", max_batch=4))
    reference = load_backend(tiny_onnx, BackendOptions(kind="onnxruntime"))
    clips = moving_squares(served.meta.input_spec, 5)
    np.testing.assert_allclose(served(clips), reference(clips), atol=1e-4)
    model = ov_compile.core().read_model(str(tiny_onnx))
    streams = ov_compile.streams(ov_compile.fixed(model, 1), "fp32", 2, max_batch=4)
    assert streams is not None and streams[1] == 2  # 2 cores: 2 streams of 1 thread
    np.testing.assert_allclose(streams[0](clips)[0], reference(clips), atol=1e-4)
    assert ov_compile.streams(model, "fp32", 2, max_batch=1) is None  # never a batch

    calls = []

    def fake(name):
        def run(video):
            calls.append((name, len(video)))
            return [video * (10 if name == "streams" else 1), video.astype(int)]

        return run

    video = np.arange(7.0)[:, None]
    outputs = ov_compile.clip_by_clip(fake("alone"), (fake("streams"), 3))(video)
    assert calls == [("streams", 6), ("alone", 1)]
    np.testing.assert_array_equal(outputs[0][:, 0], [0, 10, 20, 30, 40, 50, 6])  # every output, in order
    np.testing.assert_array_equal(outputs[1][:, 0], np.arange(7))
    calls.clear()
    ov_compile.clip_by_clip(fake("alone"), (fake("streams"), 3))(video[:2])  # fewer than the streams
    assert calls == [("alone", 1), ("alone", 1)]


def test_bf16_is_what_this_cpu_decides(tiny_onnx):
    """bf16 units: auto runs bf16 (checked at load); none: auto runs fp32 and says why, and an
    explicit bf16 is one line naming what the CPU lacks, before anything is compiled."""
    auto = load_backend(tiny_onnx, BackendOptions(kind="openvino"))
    if HAS_BF16:
        assert auto.precision == "bf16" and "bf16" in auto.reason
        return
    assert auto.precision == "fp32" and "no bf16 units" in auto.reason
    for request in ("bf16", "fp16"):
        with pytest.raises(ModelLoadError, match="units") as refused:
            check_request(tiny_onnx, BackendOptions(kind="openvino", precision=request))
        assert "\n" not in str(refused.value)
        with pytest.raises(ModelLoadError, match="units"):
            load_backend(tiny_onnx, BackendOptions(kind="openvino", precision=request))


@pytest.mark.skipif(HELD_BELOW_BF16, reason="oneDNN is held below this CPU's bf16 units (ONEDNN_MAX_CPU_ISA)")
def test_bf16_is_checked_at_load_auto_falls_back_and_explicit_is_refused(tiny_onnx, monkeypatch):
    """The load-time check's mechanics, on a CPU taken for one with bf16 units (where it has
    none, OpenVINO runs the bf16 hint in fp32: the check and fallback are what is tested)."""
    from runtime.backends import ov

    monkeypatch.setattr(ov, "this_cpu", lambda: AMX)
    low = load_backend(tiny_onnx, BackendOptions(kind="openvino", precision="bf16"))
    assert low.precision == "bf16"  # the tiny model passes the check
    assert load_backend(tiny_onnx, BackendOptions("openvino")).precision == "bf16"  # auto: bf16 where it passes
    monkeypatch.setitem(agreement.TOLERANCE, "bf16", -1.0)  # now nothing passes
    with pytest.raises(ModelLoadError, match="bf16 does not match its fp32 .* --precision fp32"):
        load_backend(tiny_onnx, BackendOptions(kind="openvino", precision="bf16"))
    fallback = load_backend(tiny_onnx, BackendOptions("openvino"))
    assert fallback.precision == "fp32" and "does not match" in fallback.provider
    assert "bf16 failed its check at load" in fallback.reason
    unchecked = load_backend(tiny_onnx, BackendOptions(kind="openvino", precision="bf16", check=False))
    assert unchecked.precision == "bf16"  # `sttm validate` checks against PyTorch instead


def test_the_split_at_the_merge_decisions_computes_the_same_model(tiny_onnx):
    """Two compiled parts — what the decisions depend on, and the rest fed from it — are the
    same function as the whole model (both in fp32 here): every output, merge_index included."""
    from runtime.backends import ov_compile, ov_split

    core = ov_compile.core()
    model = core.read_model(str(DEMO_ONNX))
    split = ov_split.decisions_in_fp32(model, "fp32", 0)
    whole = ov_compile.compiled(model, "fp32", 0)  # after the split: the model it was cut from is intact
    clips = moving_squares(load_backend(DEMO_ONNX, BackendOptions("onnxruntime")).meta.input_spec, 3)
    for a, b in zip(whole(clips), split(clips), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    unmerged = core.read_model(str(tiny_onnx))
    assert ov_split.decisions_in_fp32(unmerged, "fp32", 0) is None  # no decisions: nothing to split


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 units")
def test_the_demo_serves_in_bf16_with_its_merge_decisions_exact():
    """The one trained model: in bf16 as a whole, near-tied merge decisions flip and the
    check refuses it; with the decisions in fp32 it passes and keeps fp32's answers."""
    served = load_backend(DEMO_ONNX, BackendOptions("openvino", "bf16"))
    assert served.precision == "bf16" and served.provider == "openvino:CPU (merge decisions in fp32)"
    reference = load_backend(DEMO_ONNX, BackendOptions("openvino", "fp32"))
    clips = moving_squares(served.meta.input_spec, 8, seed=7)
    low, high = served(clips), reference(clips)
    assert np.abs(low - high).max() < agreement.TOLERANCE["bf16"]
    assert (low.argmax(1) == high.argmax(1)).all()
    logits, merges = served.explain(clips[:2])
    assert merges.shape == (2, int(np.prod(served.meta.merge_grid)))


def test_int8_needs_a_quantised_model(tiny_onnx):
    with pytest.raises(ModelLoadError, match="int8 .* --format openvino --precision int8 --calib"):
        load_backend(tiny_onnx, BackendOptions(kind="openvino", precision="int8"))


def test_an_openvino_ir_runs_on_openvino_in_the_precision_it_stores(tiny_onnx, tmp_path):
    """`sttm export --format openvino` writes an IR (.xml + .bin) with the metadata in its rt_info;
    a quantised one says int8 there (tests/export/test_ir.py quantises a real model)."""
    model = openvino.Core().read_model(str(tiny_onnx))
    openvino.save_model(model, str(tmp_path / "m.xml"), compress_to_fp16=False)
    assert resolve_kind(tmp_path / "m.xml", BackendOptions()).value == "openvino"
    with pytest.raises(ModelLoadError, match="OpenVINO IR .* cannot run on onnxruntime"):
        resolve_kind(tmp_path / "m.xml", BackendOptions(kind="onnxruntime"))
    ir = load_backend(tmp_path / "m.xml", BackendOptions(precision="fp32"))
    ort = load_backend(tiny_onnx, BackendOptions(kind="onnxruntime"))
    clips = moving_squares(ir.meta.input_spec, 2)
    assert ir.meta == ort.meta and ir.precision == "fp32"
    np.testing.assert_allclose(ir(clips), ort(clips), atol=1e-4)
    model.set_rt_info('"int8"', ["framework", "sttm.precision"])
    openvino.save_model(model, str(tmp_path / "q.xml"), compress_to_fp16=False)
    assert load_backend(tmp_path / "q.xml").precision == "int8"  # auto: what the file stores
    assert load_backend(tmp_path / "q.xml", BackendOptions(precision="int8")).precision == "int8"
    with pytest.raises(ModelLoadError, match="quantised to int8: it runs --precision int8 .* not fp32"):
        load_backend(tmp_path / "q.xml", BackendOptions(precision="fp32"))


def test_compiled_models_are_cached(tiny_onnx, tmp_path):
    cache = tmp_path / "cache"
    first = load_backend(tiny_onnx, BackendOptions(kind="openvino", precision="fp32", cache=cache))
    assert any(cache.iterdir())  # OpenVINO's compiled blob
    again = load_backend(tiny_onnx, BackendOptions(kind="openvino", precision="fp32", cache=cache))
    clips = moving_squares(first.meta.input_spec, 2)
    np.testing.assert_array_equal(first(clips), again(clips))


@pytest.mark.parametrize("kind", ["onnxruntime", "openvino"])
def test_merge_output_is_served_where_the_file_has_it(tiny_onnx, kind):
    """The demo export carries `merge_index`: both CPU runtimes return it beside the same logits
    (exact ids: the decisions are fp32); a file without the output has no explain."""
    demo = load_backend(DEMO_ONNX, BackendOptions(kind=kind, precision="fp32"))
    reference = load_backend(DEMO_ONNX, BackendOptions(kind="onnxruntime"))
    clips = moving_squares(demo.meta.input_spec, 2)
    logits, index = demo.explain(clips)
    np.testing.assert_allclose(logits, demo(clips), atol=1e-4)
    t, h, w = demo.meta.merge_grid
    assert index.dtype == np.int32 and index.shape == (2, t * h * w)
    np.testing.assert_array_equal(index, reference.explain(clips)[1])
    assert load_backend(tiny_onnx, BackendOptions(kind=kind, precision="fp32")).explain is None


def test_int8_weights_that_saturate_on_this_cpu_are_refused_at_load(tiny_onnx, tmp_path, monkeypatch):
    """A file quantised with full-range int8 weights (an older export) is exact only with VNNI:
    on a CPU without it, it is refused at load with the reason and the fix; today's 7-bit
    weights load everywhere."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from runtime.backends import ort

    full, seven = tmp_path / "full.onnx", tmp_path / "seven.onnx"
    for path, reduce in ((full, False), (seven, True)):
        quantize_dynamic(tiny_onnx, path, op_types_to_quantize=["MatMul"], per_channel=True, reduce_range=reduce,
                         weight_type=QuantType.QInt8)  # fmt: skip
        model = onnx.load(path)
        model.metadata_props.append(onnx.StringStringEntryProto(key="sttm.precision", value='"int8"'))
        onnx.save(model, path)
    assert ort.largest_int8_weight(full) == 127 and ort.largest_int8_weight(seven) <= 64
    assert ort.largest_int8_weight(tiny_onnx) == 0
    monkeypatch.setattr(ort, "this_cpu", lambda: EPYC)
    with pytest.raises(ModelLoadError, match="saturates on a CPU without VNNI .* export it again"):
        load_backend(full, BackendOptions("onnxruntime"))
    assert load_backend(seven, BackendOptions("onnxruntime")).precision == "int8"
    monkeypatch.setattr(ort, "this_cpu", lambda: AMX)
    assert load_backend(full, BackendOptions("onnxruntime")).precision == "int8"


def test_openvino_models_released_in_any_order_leave_signals_deliverable(tiny_onnx):
    """OpenVINO 2026.4's CPU plugin installs a signal stack per Core and puts the previous one
    back when that Core goes: with a Core per model, two models released oldest first left a
    freed stack installed, and the next SIGHUP (key reload) or SIGTERM killed the server with
    SIGSEGV. One Core per process: a fresh process loads two, drops them, takes a SIGHUP."""
    import subprocess
    import sys

    code = f"""
import gc, os, signal, sys
from pathlib import Path
from runtime.backends import BackendOptions, load_backend
first = load_backend(Path({str(tiny_onnx)!r}), BackendOptions(kind="openvino", precision="fp32"))
second = load_backend(Path({str(tiny_onnx)!r}), BackendOptions(kind="openvino", precision="fp32"))
del first
gc.collect()
del second
gc.collect()
signal.signal(signal.SIGHUP, lambda *_: print("reloaded", flush=True))
os.kill(os.getpid(), signal.SIGHUP)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "reloaded"), done.stderr[-500:]


def test_a_file_openvino_cannot_read_is_named_with_what_openvino_says_is_wrong(tiny_onnx, tmp_path):
    """Only "Exception from src/inference/src/cpp/core.cpp:84:" was shown: where OpenVINO raised it."""
    from runtime.backends.ov import openvino_reason

    raised = (
        "Exception from src/inference/src/cpp/core.cpp:84:\nCheck 'm_model->ParseFromIstream(&model_file)' failed at "
        "src/frontends/onnx/frontend/src/core/graph_iterator_proto.cpp:563:\nFrontEnd API failed with "
        "GeneralFailure:\nModel can't be parsed\n\n"
    )
    assert openvino_reason(raised) == "Model can't be parsed"
    assert openvino_reason("Exception from x.cpp:1:\n") == "Exception from x.cpp:1:"  # nothing better to say
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(tiny_onnx.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=r"^cannot load .*cut.onnx: (?!Exception from)"):
        load_backend(cut, BackendOptions("openvino"))
