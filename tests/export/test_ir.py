"""OpenVINO IR (`sttm export --format openvino`): fp32 as the ONNX file it came from, and int8
by NNCF with every merger node kept fp32 — validated against PyTorch, served as int8."""

from __future__ import annotations

import numpy as np
import onnx
import openvino
import pytest

from cli.main import main
from export.ir import calibration_clips, write_ir
from export.onnx import merger_nodes
from export.validate import open_onnx, validate
from runtime.agreement import moving_squares
from runtime.backends import BackendOptions, ModelLoadError, load_backend


@pytest.fixture(scope="module")
def tiny_sttm(exported):
    """vit-tiny with STTM, as initialised, exported once (shared with tests/runtime/test_fusion.py)."""
    return exported("vit-tiny", "sttm", 0.3, random=False)


def test_int8_ir_quantises_the_blocks_keeps_merge_decisions_fp32_and_serves_as_int8(tiny_sttm, tmp_path):
    model, path = tiny_sttm
    clips = calibration_clips(model.input_spec, 8)
    assert not np.array_equal(clips[:6], moving_squares(model.input_spec, 6))  # never the validation clips
    xml = write_ir(path, tmp_path / "tiny-int8.xml", clips)
    ir = openvino.Core().read_model(str(xml))
    producers = {op.get_friendly_name(): op for op in ir.get_ops()}
    quantised = [op for op in ir.get_ops() if op.get_type_name() == "FakeQuantize"]
    assert quantised  # int8 activations...
    assert any(op.get_element_type() == openvino.Type.i8 for op in ir.get_ops() if op.get_type_name() == "Constant")
    merge = [producers[name] for name in merger_nodes(onnx.load(path)) if name in producers]
    assert merge  # ... but no merger node reads a quantised input: decisions are made in fp32
    fed = {op.input_value(i).get_node().get_type_name() for op in merge for i in range(op.get_input_size())}
    assert "FakeQuantize" not in fed

    backend = load_backend(xml)  # auto: an IR on OpenVINO, in what it stores
    assert backend.provider == "openvino:CPU" and backend.precision == "int8" == backend.meta.precision
    assert backend.meta.labels == model.labels and backend.meta.merge == "sttm"
    report = validate(model, backend.run, "openvino", "int8")  # the export's own gate (tolerance 0.1)
    assert report.ok and report.tolerance == 0.1 and report.max_abs_diff > 0  # int8: close, not identical
    with pytest.raises(ModelLoadError, match="quantised to int8: it runs --precision int8"):
        load_backend(xml, BackendOptions("openvino", "bf16"))
    with pytest.raises(ModelLoadError, match="cannot run on onnxruntime"):
        load_backend(xml, BackendOptions("onnxruntime"))


def test_fp32_ir_matches_onnx_runtime(tiny_sttm, tmp_path):
    model, path = tiny_sttm
    backend = load_backend(write_ir(path, tmp_path / "tiny.xml"), BackendOptions("openvino", "fp32"))
    videos = moving_squares(model.input_spec, 3)
    np.testing.assert_allclose(backend(videos), open_onnx(path)(videos), atol=1e-4)
    with pytest.raises(ModelLoadError, match="statically quantised model: sttm export"):
        load_backend(path, BackendOptions("openvino", "int8"))  # a plain export is not int8


def test_cli_writes_a_validated_int8_ir_and_refuses_what_it_cannot_in_one_line(capsys, tmp_path):
    out = tmp_path / "q.xml"
    tiny = ["export", "vit-tiny", "--merge", "sttm", "--reduction", "0.3", "--quiet"]
    argv = [*tiny, "--format", "openvino", "--precision", "int8", "-o", str(out)]
    assert main(argv) == 2  # int8 is calibrated: never part of a plain export
    assert "give --calib DATA" in capsys.readouterr().err
    assert main([*argv, "--calib", "generated", "--calib-clips", "4"]) == 0
    assert capsys.readouterr().out.split() == [str(out), str(out.with_suffix(".bin"))]
    assert load_backend(out).precision == "int8"
    assert load_backend(out).meta.validated_diff is None  # the ONNX file's distance is not the IR's
    cases = [
        ([*tiny, "--format", "openvino", "--precision", "fp16", "-o", str(tmp_path / "h.xml")], "run-time precisions"),
        ([*argv, "--calib", str(tmp_path / "nowhere")], "not a data set directory"),
        ([*tiny, "-o", str(tmp_path / "m.onnx"), "--calib", "generated"], "--calib is for"),
    ]
    for case, needle in cases:
        assert main(case) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
