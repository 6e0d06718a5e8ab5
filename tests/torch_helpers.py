"""Helpers for the tests that need torch (tests/models, tests/export): tiny checkpoints
written the way users get them, and exports shared by a run. Imported only from there, and by
tests/conftest.py's `exported` fixture only when a test calls it — never at import, so the
service tests also run where torch is not installed (`.venv-serve`)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import torch

torch.set_num_threads(2)


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (HF inits biases and norms to constants, which hides bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return module


def export_once(root: Path, name: str, merge: str, reduction: float, random: bool, **overrides):
    """`(model, onnx path)`: a preset (merge, reduction, config overrides; every weight random or
    as initialised) exported once under `root` for every test process that shares it — a lock per
    file, so two processes never export the same one, and a file appears only whole. The model is
    rebuilt here (cheap, deterministic); the export is what costs (30-60 s by the dynamo exporter)."""
    from export.onnx import export_onnx, metadata_for
    from models import MergeConfig, build_model, load_model

    model = load_model(name, merge=merge, reduction=reduction)
    if overrides:
        model = build_model(model.config.replace(**overrides), MergeConfig(merge, reduction))
    if random:
        randomize(model)
    settings = "-".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    path = root / f"{name}-{merge}-{reduction}-{'random' if random else 'init'}{settings and '-' + settings}.onnx"
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            partial = path.with_suffix(".partial.onnx")
            export_onnx(model, partial, metadata_for(model, name))
            os.replace(partial, path)
    return model, path


def write_hf(directory, arch: str, seed: int = 0, **overrides):
    """A Hugging Face checkpoint directory from `save_pretrained`, random weights."""
    import transformers

    base = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        image_size=32,
        num_frames=4,
        num_labels=5,
    )
    base.update(overrides)
    if arch == "videomae":
        config = transformers.VideoMAEConfig(**base)
        model = transformers.VideoMAEForVideoClassification(config)
    else:
        config = transformers.TimesformerConfig(**base)
        model = transformers.TimesformerForVideoClassification(config)
    model = randomize(model, seed).eval()
    model.save_pretrained(directory)
    return model


# Foreign layouts, written from a `transformers` model so that it is the reference: each
# function takes the HF state dict and returns the same weights under the names (and in the
# wrapper) the other codebase saves. Learned from the sources, not from our converter:
# MMAction2 mmaction/models/backbones/{vit_mae,timesformer}.py + models/common/transformer.py
# (mmcv FFN: layers.0.0 / layers.1; nn.MultiheadAttention: in_proj_*, out_proj), the
# TimeSformer repo's timesformer/models/vit.py (`model.` prefix, temporal_norm1, `.pyth` with
# model_state) and VideoMAE(V2)'s models/modeling_finetune.py (timm names, under `module`).


def _hf_videomae_layers(hf: dict, depth: int):
    """Per layer of an HF VideoMAE: (qkv weight, q bias, v bias, proj, norm1, norm2, fc1, fc2) pieces."""
    for i in range(depth):
        p = f"videomae.encoder.layer.{i}."
        a = p + "attention.attention."
        yield (
            i,
            {
                "qkv.weight": torch.cat([hf[a + "query.weight"], hf[a + "key.weight"], hf[a + "value.weight"]]),
                "q_bias": hf[a + "query.bias"],
                "v_bias": hf[a + "value.bias"],
                "proj": p + "attention.output.dense",
                "norm1": p + "layernorm_before",
                "norm2": p + "layernorm_after",
                "fc1": p + "intermediate.dense",
                "fc2": p + "output.dense",
            },
        )


def _copy(out: dict, hf: dict, dst: str, src: str) -> None:
    for leaf in ("weight", "bias"):
        out[f"{dst}.{leaf}"] = hf[f"{src}.{leaf}"].clone()


def videomae_v2_layout(hf: dict, depth: int) -> dict:
    """VideoMAE / VideoMAE V2 fine-tuned `.pth`: timm names under `module`."""
    out = {}
    _copy(out, hf, "patch_embed.proj", "videomae.embeddings.patch_embeddings.projection")
    for i, layer in _hf_videomae_layers(hf, depth):
        b = f"blocks.{i}."
        out[b + "attn.qkv.weight"], out[b + "attn.q_bias"], out[b + "attn.v_bias"] = (
            layer["qkv.weight"], layer["q_bias"], layer["v_bias"])  # fmt: skip
        for dst, key in (("attn.proj", "proj"), ("norm1", "norm1"), ("norm2", "norm2"), ("mlp.fc1", "fc1"),
                         ("mlp.fc2", "fc2")):  # fmt: skip
            _copy(out, hf, b + dst, layer[key])
    _copy(out, hf, "fc_norm", "fc_norm")
    _copy(out, hf, "head", "classifier")
    return {"module": out, "epoch": 34, "args": "Namespace(model='vit_small_patch16_224')"}


def mmaction_vit_layout(hf: dict, depth: int, num_tokens: int, dim: int, classes: list[str] | None) -> dict:
    """MMAction2 Recognizer3D(VisionTransformer, TimeSformerHead) `.pth` as MMEngine saves it."""
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    out = {"backbone.pos_embed": get_sinusoid_encoding_table(num_tokens, dim).float()}  # a saved buffer
    _copy(out, hf, "backbone.patch_embed.projection", "videomae.embeddings.patch_embeddings.projection")
    for i, layer in _hf_videomae_layers(hf, depth):
        b = f"backbone.blocks.{i}."
        out[b + "attn.qkv.weight"], out[b + "attn.q_bias"], out[b + "attn.v_bias"] = (
            layer["qkv.weight"], layer["q_bias"], layer["v_bias"])  # fmt: skip
        for dst, key in (("attn.proj", "proj"), ("norm1", "norm1"), ("norm2", "norm2"), ("mlp.layers.0.0", "fc1"),
                         ("mlp.layers.1", "fc2")):  # fmt: skip
            _copy(out, hf, b + dst, layer[key])
    _copy(out, hf, "backbone.fc_norm", "fc_norm")
    _copy(out, hf, "cls_head.fc_cls", "classifier")
    meta = {"mmengine_version": "0.10.4", "epoch": 35, "iter": 1200, "seed": 0}
    if classes:
        meta["dataset_meta"] = {"classes": classes}
    return {"meta": meta, "state_dict": out}


def _hf_timesformer(hf: dict, depth: int, names: dict) -> dict:
    """HF TimeSformer weights under the names `names` gives for each piece."""
    out = {names["cls"]: hf["timesformer.embeddings.cls_token"].clone(),
           names["pos"]: hf["timesformer.embeddings.position_embeddings"].clone(),
           names["time"]: hf["timesformer.embeddings.time_embeddings"].clone()}  # fmt: skip
    _copy(out, hf, names["patch"], "timesformer.embeddings.patch_embeddings.projection")
    for i in range(depth):
        p = f"timesformer.encoder.layer.{i}."
        for piece, src in (("t_norm", "temporal_layernorm"), ("t_qkv", "temporal_attention.attention.qkv"),
                           ("t_proj", "temporal_attention.output.dense"), ("t_fc", "temporal_dense"),
                           ("s_norm", "layernorm_before"), ("s_qkv", "attention.attention.qkv"),
                           ("s_proj", "attention.output.dense"), ("norm2", "layernorm_after"),
                           ("fc1", "intermediate.dense"), ("fc2", "output.dense")):  # fmt: skip
            dst = names[piece].format(i=i)
            if dst.endswith("in_proj"):  # nn.MultiheadAttention: in_proj_weight / in_proj_bias
                out[dst + "_weight"], out[dst + "_bias"] = hf[p + src + ".weight"], hf[p + src + ".bias"]
            else:
                _copy(out, hf, dst, p + src)
    _copy(out, hf, names["norm"], "timesformer.layernorm")
    _copy(out, hf, names["head"], "classifier")
    return out


def mmaction_timesformer_layout(hf: dict, depth: int, classes: list[str] | None) -> dict:
    L = "backbone.transformer_layers.layers.{i}."
    names = dict(cls="backbone.cls_token", pos="backbone.pos_embed", time="backbone.time_embed",
                 patch="backbone.patch_embed.projection", t_norm=L + "attentions.0.norm",
                 t_qkv=L + "attentions.0.attn.in_proj", t_proj=L + "attentions.0.attn.out_proj",
                 t_fc=L + "attentions.0.temporal_fc", s_norm=L + "attentions.1.norm",
                 s_qkv=L + "attentions.1.attn.in_proj", s_proj=L + "attentions.1.attn.out_proj",
                 norm2=L + "ffns.0.norm", fc1=L + "ffns.0.layers.0.0", fc2=L + "ffns.0.layers.1",
                 norm="backbone.norm", head="cls_head.fc_cls")  # fmt: skip
    meta = {"mmengine_version": "0.10.4", "epoch": 15}
    if classes:
        meta["dataset_meta"] = {"classes": classes}
    return {"meta": meta, "state_dict": _hf_timesformer(hf, depth, names)}


def timesformer_pyth_layout(hf: dict, depth: int) -> dict:
    """The TimeSformer repo's `.pyth` (PySlowFast checkpointing): `model_state`, `model.` keys."""
    B = "model.blocks.{i}."
    names = dict(cls="model.cls_token", pos="model.pos_embed", time="model.time_embed", patch="model.patch_embed.proj",
                 t_norm=B + "temporal_norm1", t_qkv=B + "temporal_attn.qkv", t_proj=B + "temporal_attn.proj",
                 t_fc=B + "temporal_fc", s_norm=B + "norm1", s_qkv=B + "attn.qkv", s_proj=B + "attn.proj",
                 norm2=B + "norm2", fc1=B + "mlp.fc1", fc2=B + "mlp.fc2", norm="model.norm",
                 head="model.head")  # fmt: skip
    return {"epoch": 15, "model_state": _hf_timesformer(hf, depth, names), "optimizer_state": {},
            "cfg": "TRAIN:\n  DATASET: kinetics\n"}  # fmt: skip


def hf_model(arch: str, seed: int = 0, **overrides):
    """A random `transformers` model (every parameter random), not saved."""
    import transformers

    base = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=32,
                num_frames=4, num_labels=5, layer_norm_eps=1e-6)  # fmt: skip
    base.update(overrides)
    if arch == "videomae":
        model = transformers.VideoMAEForVideoClassification(transformers.VideoMAEConfig(**base))
        model.fc_norm.eps = 1e-6  # the original repos' and MMAction2's fc_norm (HF: nn.LayerNorm default 1e-5)
    else:
        model = transformers.TimesformerForVideoClassification(transformers.TimesformerConfig(**base))
    return randomize(model, seed).eval()


CLASSES = ["archery", "bowling", "cartwheel", "dribbling", "juggling"]

MMACTION_VIT_CONFIG = """\
_base_ = ['../../_base_/default_runtime.py']  # absent here: skipped
file_client_args = dict(io_backend='disk')
num_frames = 4
model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='VisionTransformer', img_size=32, patch_size=16, embed_dims=64, depth=2, num_heads=2,
        mlp_ratio=2, qkv_bias=True, num_frames=num_frames, norm_cfg=dict(type='LN', eps=1e-6)),
    cls_head=dict(type='TimeSformerHead', num_classes=5, in_channels=64, average_clips='prob'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor', mean=[114.75, 114.75, 114.75], std=[57.375, 57.375, 57.375],
        format_shape='NCTHW'))
test_pipeline = [
    dict(type='DecordInit', **file_client_args),
    dict(type='SampleFrames', clip_len=num_frames, frame_interval=3, num_clips=5, test_mode=True),
    dict(type='DecordDecode'),
    dict(type='Resize', scale=(-1, 40)),
    dict(type='ThreeCrop', crop_size=32),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='PackActionInputs'),
]
open(CANARY, 'w').write('executed')  # a config is data: this line must never run
"""


def write_format(tmp_path, fmt: str):
    """(reference HF model, checkpoint path, sidecars, clip (frames, size)) for one format in
    `FORMATS`, written as its codebase saves it (the MMAction2 ViT with its config beside it)."""
    from models.checkpoint import Sidecars

    if fmt == "mmaction-vit":
        ref = hf_model("videomae")
        (tmp_path / "cfg.py").write_text(MMACTION_VIT_CONFIG.replace("CANARY", repr(str(tmp_path / "canary"))))
        ckpt = mmaction_vit_layout(ref.state_dict(), 2, num_tokens=8, dim=64, classes=CLASSES)
        path, sidecars, clip = tmp_path / "vit_videomae.pth", Sidecars(config=tmp_path / "cfg.py"), (4, 32)
    elif fmt == "mmaction-timesformer":
        ref = hf_model("timesformer", num_attention_heads=1)  # no --config: heads from the width (64 -> 1)
        ckpt = mmaction_timesformer_layout(ref.state_dict(), 2, classes=CLASSES)
        path, sidecars, clip = tmp_path / "timesformer_k400.pth", Sidecars(), (4, 32)
    elif fmt == "timesformer":
        ref = hf_model("timesformer", num_attention_heads=1, num_frames=6, image_size=48)
        ckpt = timesformer_pyth_layout(ref.state_dict(), 2)
        path, sidecars, clip = tmp_path / "TimeSformer_divST_8x32_224_K400.pyth", Sidecars(), (6, 48)
    else:  # VideoMAE V2 at patch 14 (as ViT-g/14) and the released clip, 16 x 224; heads from the width (128 -> 2)
        ref = hf_model("videomae", patch_size=14, image_size=224, num_frames=16, hidden_size=128)
        ckpt = videomae_v2_layout(ref.state_dict(), 2)
        path, sidecars, clip = tmp_path / "vit_g_hybrid_pt_1200e_k710_ft.pth", Sidecars(), (16, 224)
    torch.save(ckpt, path)
    return ref, path, sidecars, clip


FORMATS = ["mmaction-vit", "mmaction-timesformer", "timesformer", "videomae"]
