"""Foreign checkpoints -> our names: pure functions (dict -> dict), no I/O.

Our parameter names follow the original VideoMAE / timm code (`blocks.{i}.attn.qkv`, ...),
so the original VideoMAE `.pth` needs only unwrapping; Hugging Face layouts are renamed.
"""

from __future__ import annotations

import re

import torch

from models.config import IMAGENET_MEAN, IMAGENET_STD, TIMESFORMER_PRE, ModelConfig, Preprocessing


class CheckpointError(ValueError):
    """A checkpoint that cannot become the requested model; the message says why."""


def _labels(hf: dict) -> tuple[str, ...]:
    id2label = hf.get("id2label") or {}
    n = len(id2label)
    if set(map(int, id2label)) != set(range(n)):
        raise CheckpointError("config.json id2label must map 0..n-1")
    return tuple(str(id2label[k]) for k in sorted(id2label, key=int))


def _preprocessing(processor: dict | None, default: Preprocessing) -> Preprocessing:
    if not processor:
        return default
    size = processor.get("size") or {}
    short = size.get("shortest_edge") or size.get("height") or default.short_side
    return Preprocessing(
        mean=tuple(processor.get("image_mean", default.mean)),
        std=tuple(processor.get("image_std", default.std)),
        short_side=int(short),
        sampling=default.sampling,
        frame_interval=default.frame_interval,
    )


def config_from_hf(hf: dict, processor: dict | None = None) -> ModelConfig:
    """ModelConfig from a Hugging Face `config.json` (+ `preprocessor_config.json`)."""
    kind = hf.get("model_type")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"unsupported hidden_act {hf.get('hidden_act')!r} (only gelu)")
    labels = _labels(hf)
    common = dict(
        image_size=int(hf["image_size"]),
        patch_size=int(hf["patch_size"]),
        num_frames=int(hf["num_frames"]),
        dim=int(hf["hidden_size"]),
        depth=int(hf["num_hidden_layers"]),
        heads=int(hf["num_attention_heads"]),
        mlp_dim=int(hf["intermediate_size"]),
        norm_eps=float(hf["layer_norm_eps"]),
        num_classes=len(labels),
        labels=labels,
    )
    if kind == "videomae":
        if not hf.get("use_mean_pooling", True):
            raise CheckpointError("VideoMAE with use_mean_pooling=false (first-token head) is not supported")
        qv = hf.get("qv_bias", hf.get("qkv_bias", True))
        return ModelConfig(
            arch="vit",
            tubelet_size=int(hf["tubelet_size"]),
            qkv_bias="qv" if qv else "none",
            head_norm_eps=1e-5,
            pool="mean",
            preprocessing=_preprocessing(processor, Preprocessing(IMAGENET_MEAN, IMAGENET_STD)),
            **common,
        )
    if kind == "timesformer":
        if hf.get("attention_type", "divided_space_time") != "divided_space_time":
            raise CheckpointError(f"unsupported TimeSformer attention_type {hf['attention_type']!r}")
        return ModelConfig(
            arch="timesformer",
            qkv_bias="qkv" if hf.get("qkv_bias", True) else "none",
            pool="cls",
            preprocessing=_preprocessing(processor, TIMESFORMER_PRE),
            **common,
        )
    raise CheckpointError(f"unsupported model_type {kind!r}: expected videomae or timesformer")


_VIDEOMAE_RULES = [
    (r"videomae\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"videomae\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"videomae\.encoder\.layer\.(\d+)\.attention\.attention\.(q_bias|v_bias)$", r"blocks.\1.attn.\2"),
    (r"videomae\.encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"videomae\.encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"videomae\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"videomae\.encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"videomae\.layernorm\.", "norm."),
    (r"^fc_norm\.", "fc_norm."),
    (r"^classifier\.", "head."),
]

_TIMESFORMER_RULES = [
    (r"timesformer\.embeddings\.cls_token$", "cls_token"),
    (r"timesformer\.embeddings\.position_embeddings$", "pos_embed"),
    (r"timesformer\.embeddings\.time_embeddings$", "time_embed"),
    (r"timesformer\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"timesformer\.encoder\.layer\.(\d+)\.attention\.attention\.qkv\.", r"blocks.\1.attn.qkv."),
    (r"timesformer\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"timesformer\.encoder\.layer\.(\d+)\.temporal_attention\.attention\.qkv\.", r"blocks.\1.temporal_attn.qkv."),
    (r"timesformer\.encoder\.layer\.(\d+)\.temporal_attention\.output\.dense\.", r"blocks.\1.temporal_attn.proj."),
    (r"timesformer\.encoder\.layer\.(\d+)\.temporal_dense\.", r"blocks.\1.temporal_fc."),
    (r"timesformer\.encoder\.layer\.(\d+)\.temporal_layernorm\.", r"blocks.\1.temporal_norm."),
    (r"timesformer\.encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"timesformer\.encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"timesformer\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"timesformer\.encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"timesformer\.layernorm\.", "norm."),
    (r"^classifier\.", "head."),
]


def _rename(state: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    out, unknown = {}, []
    for key, value in state.items():
        for pattern, repl in rules:
            new, hits = re.subn(pattern, repl, key)
            if hits:
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"unexpected keys in checkpoint: {', '.join(sorted(unknown)[:8])}")
    return out


def videomae_from_hf(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """HF VideoMAEForVideoClassification state dict -> ours (q/k/v fused into qkv)."""
    state = dict(state)
    fused = {}
    for i in range(depth):
        prefix = f"videomae.encoder.layer.{i}.attention.attention."
        parts = [state.pop(f"{prefix}{n}.weight", None) for n in ("query", "key", "value")]
        if any(p is None for p in parts):
            missing = [n for n, p in zip(("query", "key", "value"), parts) if p is None]
            raise CheckpointError(f"missing keys in checkpoint: {', '.join(prefix + m + '.weight' for m in missing)}")
        fused[f"blocks.{i}.attn.qkv.weight"] = torch.cat(parts, 0)  # (3C, C)
        for src, dst in (("query.bias", "q_bias"), ("value.bias", "v_bias")):  # transformers >= 5 names
            if f"{prefix}{src}" in state:
                fused[f"blocks.{i}.attn.{dst}"] = state.pop(f"{prefix}{src}")
    return {**_rename(state, _VIDEOMAE_RULES), **fused}


def timesformer_from_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF TimesformerForVideoClassification state dict -> ours."""
    return _rename(state, _TIMESFORMER_RULES)


def unwrap_original(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The original VideoMAE repo's `.pth`: weights under `model` or `module` (or bare)."""
    for key in ("model", "module", "state_dict"):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    state = {k.removeprefix("module."): v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError("no tensors found in checkpoint (expected weights under 'model' or 'module')")
    return state


def config_from_original(state: dict[str, torch.Tensor], num_frames: int, image_size: int) -> ModelConfig:
    """Infer a VideoMAE ViT config from an original-repo state dict (frames and image size
    are not stored in its weights: they come from the caller, default 16 x 224)."""
    try:
        dim, _, tubelet, patch, _ = state["patch_embed.proj.weight"].shape
        depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
        mlp_dim = state["blocks.0.mlp.fc1.weight"].shape[0]
        num_classes = state["head.weight"].shape[0]
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"not a VideoMAE ViT checkpoint (missing {err})") from None
    return ModelConfig(
        arch="vit",
        num_frames=num_frames,
        image_size=image_size,
        patch_size=patch,
        tubelet_size=tubelet,
        dim=dim,
        depth=depth,
        heads=dim // 64,
        mlp_dim=mlp_dim,
        num_classes=num_classes,
        qkv_bias="qv" if "blocks.0.attn.q_bias" in state else "none",
        pool="mean" if "fc_norm.weight" in state else "cls",
        head_norm_eps=1e-6,
    )
