"""Every checkpoint format through `sttm info` and `sttm export`: the detected format is
named, the ONNX file is validated against PyTorch (the export fails otherwise) and agrees
with the `transformers` reference the checkpoint was written from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cli.main import main
from export.validate import open_onnx
from models.checkpoint_formats import NAMES
from runtime.backends import read_metadata
from tests.torch_helpers import CLASSES, FORMATS, write_format


def _flags(sidecars) -> list[str]:
    return ["--config", str(sidecars.config)] if sidecars.config else []


@pytest.mark.parametrize("fmt", FORMATS)
def test_info_and_export_name_the_format_and_validate(tmp_path, capsys, fmt):
    ref, path, sidecars, (frames, size) = write_format(tmp_path, fmt)
    (tmp_path / "labels.txt").write_text("\n".join(c.upper() for c in CLASSES))
    own_labels = fmt.startswith("mmaction")  # MMAction2 keeps class names in its meta; others take --labels
    flags = _flags(sidecars) + ([] if own_labels else ["--labels", str(tmp_path / "labels.txt")])
    assert main(["info", str(path), "--json", *flags]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == NAMES[fmt] and info["weights_dtype"] == "float32"
    assert (info["frames"], info["input_size"]) == (frames, size)

    assert main(["export", str(path), "-o", str(tmp_path / "m.onnx"), *flags]) == 0
    assert f"detected {NAMES[fmt]}" in capsys.readouterr().err
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta.labels == (tuple(CLASSES) if own_labels else tuple(c.upper() for c in CLASSES))
    video = torch.randn(2, 3, frames, size, size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = ref(pixel_values=video.transpose(1, 2)).logits.numpy()
    got = open_onnx(tmp_path / "m.onnx")(video.numpy())
    assert np.abs(got - expected).max() <= 1e-4


def test_unsupported_checkpoint_is_one_line_naming_what_it_is(tmp_path, capsys):
    state = {"backbone.slow_path.conv1.conv.weight": torch.zeros(8, 3, 1, 7, 7), "cls_head.fc_cls.bias": torch.zeros(5)}
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "slowfast_r50.pth")
    assert main(["export", str(tmp_path / "slowfast_r50.pth"), "-o", str(tmp_path / "m.onnx"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "this is an MMAction2 SlowFast checkpoint; only ViT-style transformer backbones are supported" in err
    assert not (tmp_path / "m.onnx").exists()


def test_config_flag_on_a_non_mmaction_checkpoint_is_one_line(tmp_path, capsys):
    _, path, _, _ = write_format(tmp_path, "timesformer")
    (tmp_path / "cfg.py").write_text("model = dict(backbone=dict(type='TimeSformer'))\n")
    assert main(["info", str(path), "--config", str(tmp_path / "cfg.py")]) == 2
    assert "--config is for MMAction2 checkpoints; this is a TimeSformer original .pyth" in capsys.readouterr().err
