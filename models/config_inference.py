"""A foreign checkpoint's ModelConfig: from a Hugging Face config.json (+ what its weights say,
+ transformers' defaults), from a state dict in our names, or from a token count.

Pure functions, no I/O; the key renames are `models.convert`'s.
"""

from __future__ import annotations

import math
import re

import torch

from models.config import IMAGENET_MEAN, IMAGENET_STD, TIMESFORMER_PRE, ModelConfig, Preprocessing
from models.errors import CheckpointError


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


# What `transformers` fills in for a key a config.json leaves out (its config classes'
# defaults, transformers 4.45-5.x); used as written here when transformers is not installed.
HF_DEFAULTS = {
    "videomae": dict(image_size=224, patch_size=16, num_frames=16, tubelet_size=2, hidden_size=768,
                     num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
                     layer_norm_eps=1e-12, qkv_bias=True, use_mean_pooling=True),
    "timesformer": dict(image_size=224, patch_size=16, num_frames=8, hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072, hidden_act="gelu", layer_norm_eps=1e-6,
                        qkv_bias=True, attention_type="divided_space_time"),
}  # fmt: skip


def hf_defaults(kind: str) -> dict:
    """The defaults of transformers' own config class for `kind` when it is installed, else ours."""
    try:
        import transformers

        cls = {"videomae": transformers.VideoMAEConfig, "timesformer": transformers.TimesformerConfig}[kind]
        theirs = cls().to_dict()
    except (ImportError, AttributeError):
        return dict(HF_DEFAULTS[kind])
    theirs = {k: theirs[k] for k in HF_DEFAULTS[kind] if theirs.get(k) is not None}
    return {**HF_DEFAULTS[kind], **theirs}


def _model_config(**fields) -> ModelConfig:
    try:
        return ModelConfig(**fields)
    except ValueError as err:  # e.g. an image size the patch size does not divide
        raise CheckpointError(f"this checkpoint's sizes do not fit together: {err}") from None


def hf_from_weights(state: dict[str, torch.Tensor]) -> dict:
    """The config.json keys an HF VideoMAE / TimeSformer state dict answers itself (widths,
    depth, patch, tubelet, classes; TimeSformer's frames and image size from its embeddings)."""
    out: dict = {}
    for prefix in ("videomae", "timesformer"):
        patch = state.get(f"{prefix}.embeddings.patch_embeddings.projection.weight")  # (C, 3, [t,] p, p)
        if patch is not None:
            out.update(hidden_size=patch.shape[0], patch_size=patch.shape[-1])
            out["num_attention_heads"] = heads_for(patch.shape[0])
            if patch.dim() == 5:
                out["tubelet_size"] = patch.shape[2]
        layers = [int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.encoder\.layer\.(\d+)\.", k))]
        if layers:
            out["num_hidden_layers"] = max(layers) + 1
        fc1 = state.get(f"{prefix}.encoder.layer.0.intermediate.dense.weight")  # (mlp, C)
        if fc1 is not None:
            out["intermediate_size"] = fc1.shape[0]
    if any(k.endswith(("attention.attention.query.bias", "attention.attention.q_bias")) for k in state):
        out["qv_bias"] = True
    pos = state.get("timesformer.embeddings.position_embeddings")  # (1, 1 + P, C)
    if pos is not None and "patch_size" in out:
        out["image_size"] = math.isqrt(pos.shape[1] - 1) * out["patch_size"]
    time = state.get("timesformer.embeddings.time_embeddings")  # (1, T, C)
    if time is not None:
        out["num_frames"] = time.shape[1]
    if "classifier.weight" in state:
        out["num_labels"] = state["classifier.weight"].shape[0]
    return out


def config_from_hf(
    hf: dict, processor: dict | None = None, state: dict[str, torch.Tensor] | None = None
) -> ModelConfig:
    """ModelConfig from a Hugging Face `config.json` (+ `preprocessor_config.json`). A key it
    leaves out is read off the weights where they say it (`hf_from_weights`), else takes
    transformers' default (`hf_defaults`); heads not given are `heads_for(hidden_size)`."""
    kind = hf.get("model_type")
    if kind not in HF_DEFAULTS:
        raise CheckpointError(f"unsupported model_type {kind!r}: expected videomae or timesformer")
    explicit, weights = hf, hf_from_weights(state or {})
    unsaid = set(HF_DEFAULTS[kind]) - set(weights) - set(explicit)  # transformers is imported only for these
    hf = {**(hf_defaults(kind) if unsaid else HF_DEFAULTS[kind]), **weights, **explicit}
    if "num_attention_heads" not in explicit and "hidden_size" in explicit:
        hf["num_attention_heads"] = heads_for(int(hf["hidden_size"]))
    if hf["hidden_act"] != "gelu":
        raise CheckpointError(f"unsupported hidden_act {hf['hidden_act']!r} (only gelu)")
    labels = _labels(explicit)
    num_classes = weights.get("num_labels")
    if num_classes is not None and labels and len(labels) != num_classes:
        raise CheckpointError(f"config.json id2label has {len(labels)} labels, the classifier {num_classes} rows")
    common = dict(
        image_size=int(hf["image_size"]),
        patch_size=int(hf["patch_size"]),
        num_frames=int(hf["num_frames"]),
        dim=int(hf["hidden_size"]),
        depth=int(hf["num_hidden_layers"]),
        heads=int(hf["num_attention_heads"]),
        mlp_dim=int(hf["intermediate_size"]),
        norm_eps=float(hf["layer_norm_eps"]),
        num_classes=len(labels) or num_classes or 0,
        labels=labels,
    )
    if not common["num_classes"]:
        raise CheckpointError("no classes: config.json has no id2label and the weights no classifier")
    if kind == "videomae":
        if not hf["use_mean_pooling"]:
            raise CheckpointError("VideoMAE with use_mean_pooling=false (first-token head) is not supported")
        qv = explicit.get("qv_bias", explicit.get("qkv_bias", weights.get("qv_bias", False)))
        return _model_config(
            arch="vit",
            tubelet_size=int(hf["tubelet_size"]),
            qkv_bias="qv" if qv else "none",
            head_norm_eps=1e-5,
            pool="mean",
            preprocessing=_preprocessing(processor, Preprocessing(IMAGENET_MEAN, IMAGENET_STD)),
            **common,
        )
    if hf["attention_type"] != "divided_space_time":
        raise CheckpointError(f"unsupported TimeSformer attention_type {hf['attention_type']!r}")
    return _model_config(
        arch="timesformer",
        qkv_bias="qkv" if hf["qkv_bias"] else "none",
        pool="cls",
        preprocessing=_preprocessing(processor, TIMESFORMER_PRE),
        **common,
    )


# Heads are not in the weights. The released sizes: ViT-S 6, B 12, L 16, H 16, g/14 16
# (VideoMAE, VideoMAE V2, TimeSformer); any other width gets 64-wide heads.
HEADS_BY_DIM = {384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}


def heads_for(dim: int) -> int:
    return HEADS_BY_DIM.get(dim, max(1, dim // 64))


def config_from_state(
    state: dict[str, torch.Tensor],
    arch: str,
    *,
    num_frames: int | None = None,
    image_size: int | None = None,
    heads: int | None = None,
    **fields,
) -> ModelConfig:
    """A config read off a state dict in our names: widths, depth, patch, tubelet, classes
    (and for TimeSformer frames and image size, which its embeddings store). What the
    weights do not say comes from the caller (`num_frames`, `image_size`, `heads`, `fields`),
    else the released models' values (16 x 224 for ViT; heads from `HEADS_BY_DIM`)."""
    try:
        weight = state["patch_embed.proj.weight"]  # ViT (C, 3, t, p, p); TimeSformer (C, 3, p, p)
        dim, patch = weight.shape[0], weight.shape[-1]
        depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
        mlp_dim = state["blocks.0.mlp.fc1.weight"].shape[0]
        num_classes = state["head.weight"].shape[0]
        if arch == "timesformer":
            side = math.isqrt(state["pos_embed"].shape[1] - 1)  # (1, 1 + P, C)
            frames = state["time_embed"].shape[1]  # (1, T, C)
    except (KeyError, ValueError, IndexError) as err:
        raise CheckpointError(f"not a {arch} checkpoint (missing {err})") from None
    if arch == "timesformer":
        if image_size not in (None, side * patch) or num_frames not in (None, frames):
            raise CheckpointError(
                f"the weights are for {frames} frames of {side * patch}px; requested {num_frames} x {image_size}"
            )
        fields.update(
            num_frames=frames,
            image_size=side * patch,
            pool="cls",
            qkv_bias="qkv" if "blocks.0.attn.qkv.bias" in state else "none",
        )
    else:
        fields.update(
            num_frames=num_frames or 16,
            image_size=image_size or 224,
            tubelet_size=weight.shape[2],
            qkv_bias="qv" if "blocks.0.attn.q_bias" in state else "none",
            pool="mean" if "fc_norm.weight" in state else "cls",
        )
    if weight.shape[1] != 3:
        raise CheckpointError(f"patch embedding takes {weight.shape[1]} channels, expected 3 (RGB)")
    return _model_config(
        arch=arch,
        patch_size=patch,
        dim=dim,
        depth=depth,
        heads=heads or heads_for(dim),
        mlp_dim=mlp_dim,
        num_classes=num_classes,
        **fields,
    )


def config_from_original(state: dict[str, torch.Tensor], num_frames: int, image_size: int) -> ModelConfig:
    """A VideoMAE / VideoMAE V2 ViT config from an original-repo state dict (frames and image
    size are not stored in its weights: they come from the caller, default 16 x 224)."""
    return config_from_state(state, "vit", num_frames=num_frames, image_size=image_size, head_norm_eps=1e-6)


def vit_clip_from_tokens(
    num_tokens: int, tubelet: int, patch: int, num_frames: int | None = None, image_size: int | None = None
) -> tuple[int, int] | None:
    """(frames, image size) that give a ViT `num_tokens` tokens: what is known is kept and the
    other solved for; knowing neither, 224 px is tried first, then 16 frames. None: no fit."""
    if num_frames is None and image_size is None:
        return vit_clip_from_tokens(num_tokens, tubelet, patch, image_size=224) or vit_clip_from_tokens(
            num_tokens, tubelet, patch, num_frames=16
        )
    if image_size is not None:
        per_slice = (image_size // patch) ** 2
        if num_frames is None:
            num_frames = num_tokens // per_slice * tubelet if num_tokens % per_slice == 0 else 0
        return (num_frames, image_size) if num_frames and num_frames // tubelet * per_slice == num_tokens else None
    slices = num_frames // tubelet
    side = math.isqrt(num_tokens // slices) if slices else 0
    return (num_frames, side * patch) if side and slices * side * side == num_tokens else None
