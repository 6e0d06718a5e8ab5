"""`sttm eval` on a checkpoint and on its export give the same answer; explain draws."""

from __future__ import annotations

import json

import pytest

from cli.main import main
from export.evaluate import evaluate
from export.run import ExportSpec, run_export
from media import VideoError
from models import load_model
from models.explain import explain, merge_groups
from models.synth import CLASSES


def test_checkpoint_and_onnx_agree(data_and_model):
    root = data_and_model
    torch_result = evaluate(str(root / "ckpt"), root / "data", merge="sttm", reduction=0.3, workers=0)
    run_export(ExportSpec(str(root / "ckpt"), root / "m.onnx", merge="sttm", reduction=0.3, quiet=True))
    onnx_result = evaluate(str(root / "m.onnx"), root / "data", workers=0)
    assert torch_result["clips"] == onnx_result["clips"] == 12
    assert torch_result["top1"] == onnx_result["top1"] and torch_result["per_class"] == onnx_result["per_class"]
    assert onnx_result["merge"] == "sttm" and onnx_result["gflops"] == pytest.approx(torch_result["gflops"], 1e-3)
    assert 0 <= torch_result["top1"] <= torch_result["top5"] <= 1 and torch_result["clips_per_s"] > 0


def test_eval_cli_json(data_and_model, capsys):
    root = data_and_model
    assert main(["eval", str(root / "ckpt"), str(root / "data"), "--split", "val", "--workers", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "val" and result["clips"] == 12 and set(result["per_class"]) <= set(CLASSES)


def test_eval_counts_skipped_clips_and_refuses_a_split_it_cannot_read(data_and_model, tmp_path, capsys):
    """A split of unreadable clips scored "top-1 0.00% (0 clips)" with exit 0."""
    root = data_and_model
    good = root / "data" / "videos" / "moving_right_00000.mp4"
    (tmp_path / "test.csv").write_text(f"path,label\n{good},moving_right\nmissing.mp4,moving_right\n")
    result = evaluate(str(root / "ckpt"), tmp_path, workers=0)
    assert (result["clips"], result["skipped"]) == (1, 1)
    assert main(["eval", str(root / "ckpt"), str(tmp_path), "--workers", "0"]) == 0
    assert "(1 clips, 1 skipped)" in capsys.readouterr().out
    (tmp_path / "test.csv").write_text("path,label\nmissing.mp4,moving_right\n")
    assert main(["eval", str(root / "ckpt"), str(tmp_path), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("sttm eval: error: no clip of the test split could be read (1 listed;") and err.count("\n") == 1
    )


def test_explain_draws_merge_groups(data_and_model, tmp_path):
    root = data_and_model
    model = load_model(root / "ckpt", merge="sttm", reduction=0.38)
    video = root / "data" / "videos" / "moving_right_00000.mp4"
    out = explain(model, video, tmp_path / "x.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the file it names is the one written (-o without a suffix printed "x" and wrote x.png)
    assert explain(model, video, tmp_path / "bare") == tmp_path / "bare.png"
    assert explain(model, video, tmp_path).read_bytes()[:4] == b"\x89PNG"  # a folder: <video>.png in it
    assert (tmp_path / "moving_right_00000.png").is_file()
    # a folder that is not there yet is made, as export's and synth's (it failed after the model ran)
    assert explain(model, video, tmp_path / "new" / "m.svg").read_bytes().lstrip().startswith(b"<?xml")
    with pytest.raises(ValueError, match="-o x.txt: not an image format matplotlib writes"):
        explain(model, video, tmp_path / "x.txt")
    (tmp_path / "t.mp4").write_text("not a video")
    with pytest.raises(VideoError, match=f"^{tmp_path / 't.mp4'}: not a readable"):
        explain(model, tmp_path / "t.mp4", tmp_path / "y.png")
    import torch

    groups = merge_groups(model, torch.zeros(1, 3, 8, 64, 64))
    assert groups.shape == model.config.grid
    assert len(set(groups.ravel().tolist())) == model.schedule.tokens(model.config)[-1][1]
