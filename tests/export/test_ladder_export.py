"""`sttm export MODEL --reduction 0,0.3 -o DIR`: one validated model per rung, ladder.json with
what each rung measured, and a ladder the server opens."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli.main import main
from export.run import ExportSpec, run_ladder_export
from runtime.backends import BackendOptions, read_metadata
from runtime.ladder_file import read_ladder
from service.ladder_policy import load_rungs


def test_export_a_ladder_with_eval_data(data_and_model, tmp_path, capsys):
    root = data_and_model
    out = tmp_path / "ladder"
    argv = ["export", str(root / "ckpt"), "--reduction", "0.3,0", "-o", str(out), "--eval-data", str(root / "data")]
    assert main([*argv, "--name", "tiny", "--quiet"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "tiny_r000.onnx"), str(out / "tiny_r030.onnx"), str(out / "ladder.json")]
    name, rungs = read_ladder(out)
    assert name == "tiny" and [(r.reduction, r.name, r.file) for r in rungs] == [
        (0.0, "tiny_r000", "tiny_r000.onnx"),
        (0.3, "tiny_r030", "tiny_r030.onnx"),
    ]
    assert rungs[1].gflops < 0.75 * rungs[0].gflops  # 0.3 saved, or a little more
    for rung in rungs:
        meta = read_metadata(out / rung.file)
        assert meta.reduction == rung.reduction and meta.gflops == rung.gflops and meta.name == "tiny"
        assert rung.measured["clips"] == 12 and 0 <= rung.measured["top1"] <= rung.measured["top5"] <= 1
        assert rung.measured["model_clips_per_s"] > 0 and rung.measured["runtime"] == "onnxruntime-cpu"
    # the server opens it: every rung, the same labels, each file's own graph
    name, served = load_rungs(out, BackendOptions("onnxruntime"))
    assert [r.reduction for r in served] == [0.0, 0.3] and served[1].gflops == rungs[1].gflops
    clip = np.random.default_rng(0).normal(size=served[0].backend.input_shape(2)).astype(np.float32)
    assert not np.allclose(served[0].backend(clip), served[1].backend(clip), atol=1e-4)  # merging changed the answer


def test_a_triton_ladder_is_one_model_per_rung(data_and_model, tmp_path):
    repo = tmp_path / "repo"
    result = run_ladder_export(
        ExportSpec(str(data_and_model / "ckpt"), repo, fmt="triton", name="tiny", quiet=True), [0.0]
    )
    assert result.files[-1] == repo / "ladder.json"
    config = (repo / "tiny_r000" / "config.pbtxt").read_text()
    assert 'name: "tiny_r000"' in config and (repo / "tiny_r000" / "1" / "model.onnx").is_file()
    ladder = json.loads((repo / "ladder.json").read_text())
    assert ladder["rungs"][0]["file"] == "tiny_r000/1/model.onnx"
    assert [r.name for r in load_rungs(repo, BackendOptions("onnxruntime"))[1]] == ["tiny_r000"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--reduction", "0.3,0.301"], "a whole percent apart"),
        (["--reduction", "0.3,1.5"], "in [0, 1)"),
        (["--reduction", "0.3", "--eval-data", "x"], "measures the rungs of a ladder"),
        # these wrote a one-rung ladder (a value twice) or a folder named like a model file
        (["--reduction", "0.2,0.2"], "names a value twice"),
        (["--reduction", "0,0.5", "-o", "ladder.onnx"], "-o ladder.onnx names one model file"),
        (["--reduction", "0,0.5", "-o", "ladder.plan", "--format", "tensorrt"], "-o ladder.plan names one model"),
    ],
)
def test_ladder_flags_are_checked_in_one_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["export", "vit-tiny", "-o", "x", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sttm export: error:") and message in err and err.count("\n") == 1
    assert not any(tmp_path.iterdir())  # nothing written
