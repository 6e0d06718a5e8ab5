"""`ExportSpec` refuses an incoherent export when it is built, before any work; a ladder's
rungs are the same spec at other reductions."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest

from export.run import ExportError, ExportSpec


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(fmt="tensorrt", precision="int8"), "TensorRT engines take fp32 or fp16"),
        (dict(fmt="openvino", precision="fp16"), "stores fp32 or int8"),
        (dict(fmt="openvino", precision="int8"), "give --calib"),
        (dict(calib="generated"), "--calib is for --format openvino"),
        (dict(calib_clips=8), "--calib-clips is for --calib"),  # was ignored
        (dict(fmt="openvino", precision="int8", calib="/no/such/dir"), "not a data set directory"),
        (dict(fmt="triton", triton_runtime="other"), "--triton-runtime"),
        (dict(fmt="triton", instances=0), "--instances"),
        (dict(instances=2), "--instances and --triton-decoders are for --format triton, not onnx"),  # was ignored
        (dict(fmt="openvino", decoders=4), "are for --format triton, not openvino"),
        (dict(fmt="triton", name="../evil"), "--name '../evil': letters, digits"),  # wrote evil_video beside OUT
        (dict(name="a b"), "--name 'a b': letters, digits"),  # not a Triton model name
    ],
)
def test_an_incoherent_spec_is_refused_when_built(tmp_path, options, message):
    with pytest.raises(ExportError, match=message):
        ExportSpec("vit-tiny", tmp_path / "m.onnx", **options)


def test_a_spec_is_frozen_and_names_its_target(tmp_path):
    spec = ExportSpec("models/demo", str(tmp_path))
    assert spec.out == tmp_path and spec.name == "demo" and spec.target == tmp_path / "demo.onnx"
    with pytest.raises(FrozenInstanceError):
        spec.precision = "fp16"
    assert ExportSpec("vit-tiny", tmp_path / "m.plan", fmt="tensorrt").target == tmp_path / "m.onnx"
    assert ExportSpec("vit-tiny", tmp_path / "m.onnx", fmt="openvino").target == tmp_path / "m.xml"
    new = f"{tmp_path}/new/"  # a folder still to be made: it was written as the file `new`
    assert ExportSpec("models/demo", new).target == tmp_path / "new" / "demo.onnx"
    assert ExportSpec("models/demo", new, fmt="openvino").target == tmp_path / "new" / "demo.xml"
    rung = replace(spec, out=tmp_path / "demo_r038.onnx", reduction=0.38)  # a ladder's rung: checked again
    assert rung.name == "demo" and rung.target == Path(tmp_path / "demo_r038.onnx")


def test_the_format_is_what_the_file_name_names_unless_given():
    for name, fmt in [("m.onnx", "onnx"), ("m.xml", "openvino"), ("m.plan", "tensorrt"), ("m.ENGINE", "tensorrt"),
                      ("m.pt2", "torch"), ("ladder", "onnx"), ("m.weird", "onnx")]:  # fmt: skip
        assert ExportSpec("vit-tiny", Path("/tmp/out") / name).fmt == fmt, name
    assert ExportSpec("vit-tiny", Path("/tmp/m.pt2"), fmt="aoti").fmt == "aoti"  # given: kept
    assert ExportSpec("vit-tiny", Path("/tmp/m.xml")).target == Path("/tmp/m.xml")
    for name, named in [("m.xml", "OpenVINO IR"), ("m.plan", "TensorRT engine"), ("m.pt2", "torch.export program")]:
        with pytest.raises(ExportError, match=f"-o {name}: .* names the {named} format, but --format onnx writes ONNX"):
            ExportSpec("vit-tiny", Path("/tmp") / name, fmt="onnx")  # the server would open it as that format
