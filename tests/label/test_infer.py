"""The inference actor, without Ray: the same answers as `sttm predict` for every file."""

from __future__ import annotations

import dataclasses

import pytest

from cli.predict import predict, timeline
from label.decode import DecodeSpec, Windows, decode_batch
from label.infer import Labeller, LabelSpec, ModelPayload
from runtime import BackendOptions, load_backend
from service.classify import TimelineOptions
from tests.label.conftest import write_bad_files

pa = pytest.importorskip("pyarrow")


def labeller(model, windows=None, max_batch=4) -> Labeller:
    spec = load_backend(model).meta.input_spec
    return Labeller(
        ModelPayload.read(model), LabelSpec(BackendOptions(), DecodeSpec(spec, timeline=windows), 3, max_batch)
    )


def test_classify_gives_what_sttm_predict_gives(archive, tiny_onnx, tmp_path):
    write_bad_files(tmp_path)
    paths = [str(p) for p in archive[:6]] + [str(tmp_path / "text.mp4")]
    actor = labeller(tiny_onnx)
    rows = actor(decode_batch(pa.table({"id": paths, "path": paths}), actor.spec.decode)).to_pylist()
    expected = predict(str(tiny_onnx), paths, top_k=3)
    precision = load_backend(tiny_onnx).precision  # what this CPU runs the file in (auto)
    for row, want in zip(rows, expected):
        if "error" in want:
            assert (row["status"], row["labels"]) == (want["error"]["code"], None)
            continue
        assert row["status"] == "ok" and row["labels"] == [p["label"] for p in want["predictions"]]
        assert row["scores"] == pytest.approx([p["score"] for p in want["predictions"]], abs=1e-5)
        assert (row["model"], row["reduction"]) == (want["model"], want["reduction"])
        assert row["duration_s"] == pytest.approx(want["video"]["duration_s"], abs=1e-3)  # the API rounds to ms
        assert row["precision"] == precision and row["inference_ms"] > 0


def test_a_failed_model_call_is_rows_with_internal_not_a_lost_block(archive, tiny_onnx):
    """A model call that raises fails its clips' rows (`internal`, as the server's 500), in the
    actor: the block is not lost, so its videos are never taken for a decoder crash."""
    paths = [str(p) for p in archive[:5]]
    actor = labeller(tiny_onnx, max_batch=4)
    calls = []

    def broken_then_fine(video):
        calls.append(len(video))
        if len(calls) == 1:
            raise RuntimeError("the runtime failed")
        return real(video)

    real, actor.backend = actor.backend, dataclasses.replace(actor.backend, run=broken_then_fine)
    rows = actor(decode_batch(pa.table({"id": paths, "path": paths}), actor.spec.decode)).to_pylist()
    assert calls == [4, 1]
    assert [r["status"] for r in rows] == ["internal"] * 4 + ["ok"]
    assert rows[0]["message"] == "RuntimeError: the runtime failed" and rows[0]["labels"] is None


def test_timeline_gives_what_sttm_predict_timeline_gives(archive, tiny_onnx):
    path = str(max(archive, key=lambda p: p.stat().st_size))
    actor = labeller(tiny_onnx, Windows(window_s=1.0, stride_s=0.5))
    (row,) = actor(decode_batch(pa.table({"id": ["v"], "path": [path]}), actor.spec.decode)).to_pylist()
    import json

    want = json.loads(timeline(str(tiny_onnx), path, TimelineOptions(top_k=3, window_s=1.0, stride_s=0.5)))
    spans = [t for w in row["windows"] for t in (w["start_s"], w["end_s"])]
    assert spans == pytest.approx([t for w in want["windows"] for t in (w["start_s"], w["end_s"])], abs=1e-3)  # ms
    assert [w["labels"] for w in row["windows"]] == [[p["label"] for p in w["predictions"]] for w in want["windows"]]
    assert [s["label"] for s in row["segments"]] == [s["label"] for s in want["segments"]]
    got = [t for s in row["segments"] for t in (s["start_s"], s["end_s"], s["score"])]
    assert got == pytest.approx([t for s in want["segments"] for t in (s["start_s"], s["end_s"], s["score"])], abs=1e-3)
    assert len(row["windows"]) > 2 and row["duration_s"] == pytest.approx(want["video"]["duration_s"], abs=1e-3)


def test_timeline_refuses_too_many_windows_from_the_header_before_any_inference(archive, tiny_onnx):
    path = str(max(archive, key=lambda p: p.stat().st_size))
    actor = labeller(tiny_onnx, Windows(window_s=1.0, stride_s=0.5, max_windows=2))
    actor._run = lambda tensor: pytest.fail("no window may reach the model")
    (row,) = actor(decode_batch(pa.table({"id": ["v"], "path": [path]}), actor.spec.decode)).to_pylist()
    assert row["status"] == "too_many_windows" and row["labels"] is None


def test_a_ladder_runs_its_least_merged_rung(tmp_path, tiny_onnx):
    from runtime.ladder_file import RungEntry, write_ladder

    (tmp_path / "r0.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "r5.onnx").write_bytes(tiny_onnx.read_bytes())
    write_ladder(
        tmp_path, "lad", [RungEntry(0.5, "lad_r050", "r5.onnx", 1.0), RungEntry(0.0, "lad_r000", "r0.onnx", 2.0)]
    )
    payload = ModelPayload.read(tmp_path)
    assert (payload.main, payload.name, payload.reduction) == ("r0.onnx", "lad", 0.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without ladder.json"):
        ModelPayload.read(tmp_path / "empty")


def test_the_model_is_unpacked_once_per_content(tmp_path, tiny_onnx):
    payload = ModelPayload.read(tiny_onnx)
    folder = payload.unpack(tmp_path)
    assert (folder / "tiny.onnx").read_bytes() == tiny_onnx.read_bytes()
    assert payload.unpack(tmp_path) == folder and [p.name for p in tmp_path.iterdir()] == [folder.name]
    other = ModelPayload(payload.main, {"tiny.onnx": b"other bytes"}, payload.source, "", None)
    assert other.unpack(tmp_path) != folder  # another model, another folder
