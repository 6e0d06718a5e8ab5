"""Checkpoints as users have them (part 2): MMAction2 recognisers, the TimeSformer repo's
`.pyth`, VideoMAE V2 releases, sharded and half-precision weights, HF configs that lean on
defaults. Each is written in its own codebase's layout from a random `transformers` model,
which is the reference its logits must match (merging off)."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import save_file

from models import CheckpointError, load_model
from models.checkpoint import Sidecars
from models.config_inference import heads_for, vit_clip_from_tokens
from tests.torch_helpers import CLASSES, FORMATS, hf_model, mmaction_timesformer_layout, write_format


def _clip(frames: int, size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, frames, size, size, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("fmt", FORMATS)
def test_foreign_checkpoint_matches_its_reference(tmp_path, fmt):
    ref, path, sidecars, (frames, size) = write_format(tmp_path, fmt)
    model = load_model(path, sidecars=sidecars)
    assert model.source.layout == fmt and model.source.dtype == "float32"
    assert (model.config.num_frames, model.config.image_size) == (frames, size)
    video = _clip(frames, size)
    with torch.no_grad():
        expected = ref(pixel_values=video.transpose(1, 2)).logits
        assert (model(video) - expected).abs().max() <= 1e-4
    if fmt.startswith("mmaction"):
        assert model.labels == tuple(CLASSES)  # from the checkpoint's meta
    assert not (tmp_path / "canary").exists()


def test_mmaction_config_is_read_as_data(tmp_path):
    _, path, sidecars, _ = write_format(tmp_path, "mmaction-vit")
    base = tmp_path / "_base_"
    base.mkdir()
    (base / "vit.py").write_text("model = dict(backbone=dict(type='VisionTransformer', num_heads=7, depth=2))\n")
    text = (tmp_path / "cfg.py").read_text().replace("../../_base_/default_runtime.py", "_base_/vit.py")
    (tmp_path / "cfg.py").write_text(text)  # the base says 7 heads, the config 2: the config wins
    model = load_model(path, sidecars=sidecars)
    pre = model.preprocessing
    assert model.config.heads == 2 and model.config.norm_eps == 1e-6
    assert pre.mean == (0.45, 0.45, 0.45) and pre.std == (0.225, 0.225, 0.225)  # 114.75 / 255, 57.375 / 255
    assert (pre.short_side, pre.sampling, pre.frame_interval) == (40, "dense", 3)
    assert not (tmp_path / "canary").exists()


def test_mmaction_defaults_without_a_config(tmp_path):
    ref = hf_model("timesformer", num_attention_heads=1)
    torch.save(mmaction_timesformer_layout(ref.state_dict(), 2, classes=None), tmp_path / "t.pth")
    model = load_model(tmp_path / "t.pth")
    assert model.preprocessing.mean == (0.5, 0.5, 0.5) and model.preprocessing.frame_interval == 32
    assert model.labels == tuple(f"class_{i}" for i in range(5))  # no meta classes, no --labels
    (tmp_path / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    assert load_model(tmp_path / "t.pth", sidecars=Sidecars(labels=tmp_path / "labels.txt")).labels == tuple(CLASSES)
    (tmp_path / "labels.txt").write_text("a\nb\n")
    with pytest.raises(CheckpointError, match="2 labels for a head of 5 classes"):
        load_model(tmp_path / "t.pth", sidecars=Sidecars(labels=tmp_path / "labels.txt"))


def test_vit_clip_is_solved_from_the_position_table():
    assert vit_clip_from_tokens(1568, 2, 16) == (16, 224)  # ViT-B/16, 16 x 224
    assert vit_clip_from_tokens(2048, 2, 14) == (16, 224)  # ViT-g/14: 8 x 16 x 16
    assert vit_clip_from_tokens(8, 2, 16, num_frames=4) == (4, 32)
    assert vit_clip_from_tokens(8, 2, 16, image_size=32) == (4, 32)
    assert vit_clip_from_tokens(9, 2, 16, num_frames=4) is None
    assert [heads_for(d) for d in (384, 768, 1024, 1408, 128)] == [6, 12, 16, 16, 2]


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_foreign_checkpoint_is_one_clear_line(tmp_path, fmt):
    _, path, sidecars, _ = write_format(tmp_path, fmt)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cannot read weights") as err:
        load_model(path, sidecars=sidecars)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_key_is_named(tmp_path, fmt):
    _, path, sidecars, _ = write_format(tmp_path, fmt)
    ckpt = torch.load(path, weights_only=True)
    state = ckpt.get("state_dict") or ckpt.get("model_state") or ckpt["module"]
    victim = next(k for k in state if "blocks.1." in k or "layers.1." in k if k.endswith("weight") and "norm" in k)
    del state[victim]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"missing keys: blocks\.1\.\w*norm\w*\.weight") as err:
        load_model(path, sidecars=sidecars)
    assert "\n" not in str(err.value)


def _resnet_state(stem: str, dims: int) -> dict:
    shape = (8, 3, 3, 7, 7) if dims == 5 else (8, 3, 7, 7)
    return {f"backbone.{stem}conv1.conv.weight": torch.zeros(shape), "backbone.layer1.0.conv1.conv.weight":
            torch.zeros(shape[:1] + (8,) + shape[2:]), "cls_head.fc_cls.weight": torch.zeros(5, 8)}  # fmt: skip


@pytest.mark.parametrize(
    "state, what",
    [
        (
            {
                "backbone.slow_path.conv1.conv.weight": torch.zeros(8, 3, 1, 7, 7),
                "backbone.fast_path.conv1.conv.weight": torch.zeros(4, 3, 5, 7, 7),
            },
            "an MMAction2 SlowFast checkpoint",
        ),
        (_resnet_state("", 5), "an MMAction2 I3D / SlowOnly checkpoint"),
        (_resnet_state("", 4), "an MMAction2 TSN / TSM checkpoint"),
        ({"backbone.layers.0.blocks.0.attn.relative_position_bias_table": torch.zeros(4, 2)}, "a Video Swin"),
        ({"patch_embed.proj.weight": torch.zeros(8, 3, 16, 16), "head.weight": torch.zeros(5, 8)}, "an image ViT"),
    ],  # fmt: skip
    ids=["slowfast", "i3d", "tsn", "swin", "image-vit"],
)
def test_non_transformer_checkpoints_are_named(tmp_path, state, what):
    torch.save({"meta": {"epoch": 1}, "state_dict": state}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=f"this is {what}.*; only ViT-style transformer backbones are supported"):
        load_model(tmp_path / "other.pth")


def test_config_values_of_the_wrong_kind_and_learned_positions_are_named(tmp_path):
    _, path, sidecars, _ = write_format(tmp_path, "mmaction-vit")
    (tmp_path / "cfg.py").write_text((tmp_path / "cfg.py").read_text().replace("num_heads=2", "num_heads='two'"))
    with pytest.raises(CheckpointError, match="config num_heads = 'two': expected a positive int"):
        load_model(path, sidecars=sidecars)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["backbone.pos_embed"] += 0.5  # learned, not the sin-cos table
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="learned position embeddings"):
        load_model(path)


def _space_only(state: dict) -> None:  # TimeSformer trained without temporal attention
    for key in [k for k in state if "temporal" in k or ".attentions.1." in k]:
        del state[key]


def _layer_scale(state: dict) -> None:  # VideoMAE V2 with init_values > 0
    state["blocks.0.gamma_1"] = torch.ones(128)


@pytest.mark.parametrize(
    "fmt, mutate, message",
    [
        ("mmaction-timesformer", _space_only, "MMAction2 TimeSformer without divided space-time attention"),
        ("timesformer", _space_only, "TimeSformer without divided space-time attention"),
        ("videomae", _layer_scale, "layer scale .gamma_1/gamma_2, init_values > 0. is not supported"),
    ],
)
def test_unsupported_variant_of_a_format_is_named(tmp_path, fmt, mutate, message):
    _, path, sidecars, _ = write_format(tmp_path, fmt)
    ckpt = torch.load(path, weights_only=True)
    mutate(ckpt.get("state_dict") or ckpt.get("model_state") or ckpt["module"])
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=message):
        load_model(path, sidecars=sidecars)


def test_a_bare_hf_state_dict_says_where_its_config_goes(tmp_path):
    torch.save(hf_model("videomae", num_hidden_layers=1).state_dict(), tmp_path / "pytorch_model.pth")
    with pytest.raises(CheckpointError, match="this is a Hugging Face videomae state dict: load the directory"):
        load_model(tmp_path / "pytorch_model.pth")


def test_wrong_architecture_is_named(tmp_path):
    _, path, sidecars, _ = write_format(tmp_path, "mmaction-vit")
    text = (tmp_path / "cfg.py").read_text().replace("type='VisionTransformer'", "type='TimeSformer'")
    (tmp_path / "cfg.py").write_text(text)
    with pytest.raises(CheckpointError, match="describes a TimeSformer backbone, the weights a VisionTransformer"):
        load_model(path, sidecars=sidecars)
    ckpt = torch.load(path, weights_only=True)
    ckpt["state_dict"]["backbone.blocks.0.gamma_1"] = torch.ones(64)
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="layer scale"):
        load_model(path)


@pytest.mark.parametrize("arch", ["videomae", "timesformer"])
def test_hf_config_with_only_model_type(tmp_path, arch):
    """What a new user tries: config.json says only the model type. Widths, depth, classes (and
    TimeSformer's clip) come from the weights, the rest from transformers' defaults (VideoMAE:
    16 x 224, layer_norm_eps 1e-12)."""
    size = dict(num_frames=16, image_size=224) if arch == "videomae" else dict(num_frames=4, image_size=32)
    ref = hf_model(arch, num_attention_heads=1, num_hidden_layers=1, layer_norm_eps=1e-12 if arch == "videomae"
                   else 1e-6, **size)  # fmt: skip
    if arch == "videomae":
        ref.fc_norm.eps = 1e-5
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": arch}))
    model = load_model(tmp_path)
    frames, side = (16, 224) if arch == "videomae" else (4, 32)
    assert (model.config.num_frames, model.config.image_size, model.config.dim) == (frames, side, 64)
    assert model.source.layout == f"hf-{arch}"
    video = _clip(frames, side, batch=1)
    with torch.no_grad():
        assert (model(video) - ref(pixel_values=video.transpose(1, 2)).logits).abs().max() <= 1e-4


@pytest.mark.parametrize("arch", ["videomae", "timesformer"])
def test_our_hf_defaults_equal_transformers(monkeypatch, arch):
    from models.config_inference import HF_DEFAULTS, hf_defaults

    theirs = hf_defaults(arch)  # from transformers' config class (installed here)
    monkeypatch.setitem(sys.modules, "transformers", None)  # as where it is not installed
    assert hf_defaults(arch) == HF_DEFAULTS[arch] == theirs


def _shard(state: dict, n: int) -> list[dict]:
    keys = list(state)
    return [{k: state[k] for k in keys[i::n]} for i in range(n)]


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_sharded_half_precision_checkpoint(tmp_path, kind):
    ref = hf_model("timesformer", num_frames=4, image_size=32).half().float()  # the reference: fp16-exact weights
    (tmp_path / "config.json").write_text(json.dumps({**ref.config.to_dict(), "torch_dtype": "float16"}))
    shards = _shard({k: v.half().contiguous() for k, v in ref.state_dict().items()}, 3)
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-00003.{'safetensors' if kind == 'safetensors' else 'bin'}"
        save_file(shard, tmp_path / name) if kind == "safetensors" else torch.save(shard, tmp_path / name)
        weight_map.update(dict.fromkeys(shard, name))
    index = tmp_path / ("model.safetensors.index.json" if kind == "safetensors" else "pytorch_model.bin.index.json")
    index.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))
    model = load_model(tmp_path)
    assert model.source.dtype == "float16"
    video = _clip(4, 32)
    with torch.no_grad():
        assert (model(video) - ref(pixel_values=video.transpose(1, 2)).logits).abs().max() <= 1e-4
    (tmp_path / name).unlink()
    with pytest.raises(CheckpointError, match=f"shard {name} is missing"):
        load_model(tmp_path)
    index.write_text(json.dumps({"weight_map": dict.fromkeys(weight_map, "../elsewhere.bin")}))
    with pytest.raises(CheckpointError, match="shard '../elsewhere.bin' is not a file name"):
        load_model(tmp_path)
