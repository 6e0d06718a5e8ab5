"""Loaders: our format, the original VideoMAE .pth, built-in names, and clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from models import PRESETS, CheckpointError, MergeConfig, build_model, load_model, save_model
from tests.torch_helpers import randomize, write_hf

DEMO_ONNX = Path(__file__).parents[2] / "models" / "demo" / "demo.onnx"

TINY = PRESETS["vit-tiny"]


def _video(cfg):
    return torch.randn(2, 3, cfg.num_frames, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(3))


def test_builtin_name_is_deterministic_and_eval():
    a, b = load_model("vit-tiny"), load_model("vit-tiny")
    assert not a.training
    with torch.no_grad():
        assert torch.equal(a(_video(TINY)), b(_video(TINY)))


@pytest.mark.parametrize("name", ["vit-tiny", "timesformer-tiny"])
def test_own_format_round_trip_keeps_merge_and_motion_weights(tmp_path, name):
    cfg = PRESETS[name].replace(labels=tuple(f"act{i}" for i in range(10)))
    model = randomize(build_model(cfg, MergeConfig(method="sttm", reduction=0.3)))  # motion weights non-zero
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.merge_config == model.merge_config and loaded.labels == cfg.labels
    with torch.no_grad():
        assert torch.equal(loaded(_video(cfg)), model(_video(cfg)))


def test_own_format_can_switch_merge_method(tmp_path):
    save_model(randomize(build_model(TINY)), tmp_path)
    sttm = load_model(tmp_path, merge="sttm", reduction=0.3)
    assert sttm.merge_config.method == "sttm" and sttm.gflops() < sttm.gflops(merged=False)
    with pytest.warns(UserWarning, match="merge weights"):
        save_model(sttm, tmp_path / "sttm")
        load_model(tmp_path / "sttm", merge="none")


@pytest.mark.parametrize("wrapper", ["model", "module", None])
def test_original_videomae_pth(tmp_path, wrapper):
    cfg = TINY.replace(dim=128, heads=2, num_classes=7, head_norm_eps=1e-6)  # heads = dim // 64
    model = randomize(build_model(cfg))
    state = model.model.state_dict()
    if wrapper == "module":
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save({wrapper: state, "epoch": 3} if wrapper else state, tmp_path / "checkpoint.pth")
    loaded = load_model(tmp_path / "checkpoint.pth", num_frames=cfg.num_frames, image_size=cfg.image_size)
    assert loaded.config.dim == 128 and loaded.config.num_classes == 7
    with torch.no_grad():
        assert torch.equal(loaded(_video(cfg)), model(_video(cfg)))


def test_truncated_file_is_a_clear_error(tmp_path):
    write_hf(tmp_path, "videomae")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_model(tmp_path)


def test_truncated_pth_is_a_clear_error(tmp_path):
    torch.save({"model": build_model(TINY).model.state_dict()}, tmp_path / "x.pth")
    data = (tmp_path / "x.pth").read_bytes()
    (tmp_path / "x.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_model(tmp_path / "x.pth")


@pytest.mark.parametrize(
    ("head", "what"),
    [
        (b"\x00\x00\x00\x18ftypmp42", "an MP4 / MOV video"),
        (b"\x1a\x45\xdf\xa3\x9f", "a Matroska / WebM video"),
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"moving_right\nmoving_left\n", "a text file"),
        (b"", "an empty file"),
        (b"\x08\x0a\x12\x07pytorch", "an ONNX model: the server takes a file for ONNX by its .onnx suffix (rename it)"),
        (bytes(range(200, 216)), "neither a PyTorch checkpoint (zip or pickle) nor safetensors"),
    ],
)
def test_a_file_that_is_not_weights_is_named_for_what_it_is(tmp_path, head, what):
    """Was "cannot read weights (it pickles Python objects besides tensors ...)" for a video."""
    (tmp_path / "x.pth").write_bytes(head + bytes(100) * bool(head))
    with pytest.raises(CheckpointError, match=f"x.pth: not a weights file: this is {re.escape(what)}$"):
        load_model(tmp_path / "x.pth")


def test_missing_keys_are_named(tmp_path):
    write_hf(tmp_path, "videomae")
    state = load_file(tmp_path / "model.safetensors")
    del state["fc_norm.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="missing keys: fc_norm.weight"):
        load_model(tmp_path)


def test_wrong_architecture_is_a_clear_error(tmp_path):
    write_hf(tmp_path, "videomae")
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(CheckpointError, match="unsupported model_type 'bert'"):
        load_model(tmp_path)


def test_weights_of_another_architecture_are_rejected(tmp_path):
    write_hf(tmp_path / "t", "timesformer")
    write_hf(tmp_path / "v", "videomae")
    (tmp_path / "v" / "model.safetensors").write_bytes((tmp_path / "t" / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="missing keys"):
        load_model(tmp_path / "v")


def test_shape_mismatch_is_named(tmp_path):
    write_hf(tmp_path, "videomae")
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    with pytest.raises(CheckpointError, match="shape mismatch: blocks.0.mlp.fc1"):
        load_model(tmp_path)


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "notes.pth")
    with pytest.raises(CheckpointError, match="without config.json"):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_model(tmp_path / "missing")


def test_an_exported_model_is_named_as_one_with_what_runs_it(capsys, tmp_path):
    from cli.main import main
    from models.checkpoint import EXPORTED
    from runtime.metadata import EXPORTED_SUFFIXES

    assert set(EXPORTED) == set(EXPORTED_SUFFIXES)  # the two lists cannot drift
    with pytest.raises(CheckpointError, match=r"demo.onnx: an exported model \(ONNX\), not a checkpoint"):
        load_model(DEMO_ONNX)
    assert main(["export", str(DEMO_ONNX), "-o", str(tmp_path / "m.onnx"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "sttm serve --model" in err and err.count("\n") == 1 and not list(tmp_path.iterdir())


def test_a_ladder_is_named_as_one_with_what_runs_it(tmp_path):
    """It was 'a directory without config.json' (read as a Hugging Face checkpoint)."""
    from models.checkpoint import LADDER_FILE
    from runtime import ladder_file

    assert LADDER_FILE == ladder_file.LADDER_FILE  # the two cannot drift
    (tmp_path / LADDER_FILE).write_text("{}")
    with pytest.raises(CheckpointError, match=r"a ladder of exported models, not a checkpoint: .*`sttm eval` one rung"):
        load_model(tmp_path)


def test_hf_directory_with_pytorch_model_bin(tmp_path):
    reference = write_hf(tmp_path, "timesformer")
    state = load_file(tmp_path / "model.safetensors")
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    video = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        expected = reference(pixel_values=video.transpose(1, 2)).logits
        assert (load_model(tmp_path)(video) - expected).abs().max() <= 1e-4


def test_the_bundled_demo_loads_by_name_fits_its_budget_and_matches_its_onnx():
    from pathlib import Path

    from export.validate import open_onnx, validate
    from models.synth import CLASSES

    demo = Path(__file__).resolve().parents[2] / "models" / "demo"
    assert sum(f.stat().st_size for f in demo.iterdir() if f.is_file()) <= 10_000_000  # checkpoint + ONNX
    model = load_model("demo")
    assert model.labels == tuple(CLASSES) and model.config.input_motion
    assert (model.merge_config.method, model.merge_config.reduction) == ("sttm", 0.38)
    report = validate(model, open_onnx(demo / "demo.onnx"), "onnxruntime-cpu")
    assert report.ok  # the served file is the shipped checkpoint


def test_mmaction2_configs_saved_with_a_bom_or_not_in_utf8_are_read_or_named(tmp_path):
    from models.mmconfig import read_config

    (tmp_path / "config.py").write_bytes(b"\xef\xbb\xbfmodel = dict(cls_head=dict(num_classes=400))\n")
    assert read_config(tmp_path / "config.py") == {"model": {"cls_head": {"num_classes": 400}}}
    (tmp_path / "config.py").write_bytes("model = dict(type='caf\xe9')\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"config.py: not UTF-8 text \(byte 0xe9 at 22\)$"):
        read_config(tmp_path / "config.py")
