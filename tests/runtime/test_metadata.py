"""The artifact contract: `ModelMetadata` <-> the file's `sttm.*` keys."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from media import InputSpec
from runtime.metadata import PREFIX, ModelMetadata

SPEC = InputSpec(16, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 256, "uniform", 2)
META = ModelMetadata("m", "vit", ("a", "b"), SPEC, "sttm", 0.38, 111.4, 180.3, merge_grid=(8, 14, 14))


def test_props_round_trip_with_the_input_spec_nested_once():
    props = META.to_props()
    assert json.loads(props["sttm.input_spec"]) == {
        "frames": 16, "size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "short_side": 256, "sampling": "uniform", "frame_interval": 2,
    }  # fmt: skip
    assert not {"sttm.num_frames", "sttm.image_size", "sttm.mean"} & set(props)  # one spelling
    assert ModelMetadata.from_props(props) == META
    assert ModelMetadata.from_dict(json.loads(json.dumps(asdict(META)))) == META  # a TensorRT sidecar


def test_files_exported_before_the_spec_was_nested_still_load():
    props = {k: v for k, v in META.to_props().items() if k != "sttm.input_spec"}
    legacy = {"num_frames": 16, "image_size": 224, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
              "short_side": 256, "sampling": "uniform", "frame_interval": 2}  # fmt: skip
    props |= {PREFIX + k: json.dumps(v) for k, v in legacy.items()}
    assert ModelMetadata.from_props(props) == META


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("sttm.labels"), "lacks 'sttm.labels'"),
        (lambda p: p.pop("sttm.input_spec"), "lacks sttm.input_spec"),
        (lambda p: p.update({"sttm.input_spec": "{"}), "is not JSON"),
        (lambda p: p.update({"sttm.input_spec": '{"frames": 16}'}), "input_spec is malformed"),
    ],
)
def test_missing_or_malformed_keys_are_named(change, message):
    props = META.to_props()
    change(props)
    with pytest.raises(ValueError, match=message):
        ModelMetadata.from_props(props)


def test_read_metadata_reads_a_file_without_compiling_it(tmp_path, monkeypatch):
    from runtime import backends
    from tests.service.conftest import TINY_META, write_tiny_onnx

    write_tiny_onnx(tmp_path / "m.onnx")
    monkeypatch.setattr(backends, "load_backend", lambda *a, **k: pytest.fail("nothing is compiled"))
    assert backends.read_metadata(tmp_path / "m.onnx") == TINY_META
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(backends.ModelLoadError, match="bad.onnx: not an ONNX file"):
        backends.read_metadata(tmp_path / "bad.onnx")
    (tmp_path / "e.plan").write_bytes(b"engine")
    with pytest.raises(backends.ModelLoadError, match="no metadata sidecar e.plan.json"):
        backends.read_metadata(tmp_path / "e.plan")
    (tmp_path / "e.plan.json").write_text("{}")  # said only: e.plan.json: 'metadata'
    with pytest.raises(backends.ModelLoadError, match=r"e.plan.json: no 'metadata' field$"):
        backends.read_metadata(tmp_path / "e.plan")
