"""Foreign checkpoints -> our names: pure functions (dict -> dict) and their rename tables, no I/O.

Our parameter names follow the original VideoMAE / timm code (`blocks.{i}.attn.qkv`, ...),
so the original VideoMAE `.pth` needs only unwrapping; Hugging Face and MMAction2 layouts are
renamed. Which config a checkpoint has is `models.config_inference`'s.
"""

from __future__ import annotations

import re

import torch

from models.errors import CheckpointError
from models.layers import sinusoid_table

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
    """The original repos' files: weights under `model` / `module` (VideoMAE, VideoMAE V2),
    `model_state` (TimeSformer's `.pyth`), `state_dict` (MMAction2) or bare."""
    for key in ("model", "module", "model_state", "state_dict"):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    state = {k.removeprefix("module."): v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError("no tensors found in checkpoint (expected weights under 'model' or 'module')")
    return state


def _reject_layer_scale(state: dict) -> None:
    if any(re.search(r"\.gamma_[12]$", k) for k in state):
        raise CheckpointError("layer scale (gamma_1/gamma_2, init_values > 0) is not supported")


def videomae_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original VideoMAE / VideoMAE V2 fine-tuned ViT: already our names (a learned
    `pos_embed` or layer scale would not be, and are named)."""
    _reject_layer_scale(state)
    if "pos_embed" in state:
        raise CheckpointError("learned position embeddings (use_learnable_pos_emb) are not supported")
    return dict(state)


_L = r"^backbone\.transformer_layers\.layers\.(\d+)\."
_MMACTION_TIMESFORMER_RULES = [
    (r"^backbone\.(cls_token|pos_embed|time_embed)$", r"\1"),
    (r"^backbone\.patch_embed\.projection\.", "patch_embed.proj."),
    (_L + r"attentions\.0\.norm\.", r"blocks.\1.temporal_norm."),
    (_L + r"attentions\.0\.attn\.in_proj_(weight|bias)$", r"blocks.\1.temporal_attn.qkv.\2"),
    (_L + r"attentions\.0\.attn\.out_proj\.", r"blocks.\1.temporal_attn.proj."),
    (_L + r"attentions\.0\.temporal_fc\.", r"blocks.\1.temporal_fc."),
    (_L + r"attentions\.1\.norm\.", r"blocks.\1.norm1."),
    (_L + r"attentions\.1\.attn\.in_proj_(weight|bias)$", r"blocks.\1.attn.qkv.\2"),
    (_L + r"attentions\.1\.attn\.out_proj\.", r"blocks.\1.attn.proj."),
    (_L + r"ffns\.0\.norm\.", r"blocks.\1.norm2."),
    (_L + r"ffns\.0\.layers\.0\.0\.", r"blocks.\1.mlp.fc1."),
    (_L + r"ffns\.0\.layers\.1\.", r"blocks.\1.mlp.fc2."),
    (r"^backbone\.norm\.", "norm."),
    (r"^cls_head\.fc_cls\.", "head."),
]

_MMACTION_VIT_RULES = [
    (r"^backbone\.patch_embed\.projection\.", "patch_embed.proj."),
    (r"^backbone\.blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj)\.", r"blocks.\1.\2."),
    (r"^backbone\.blocks\.(\d+)\.attn\.(q_bias|v_bias)$", r"blocks.\1.attn.\2"),
    (r"^backbone\.blocks\.(\d+)\.mlp\.layers\.0\.0\.", r"blocks.\1.mlp.fc1."),
    (r"^backbone\.blocks\.(\d+)\.mlp\.layers\.1\.", r"blocks.\1.mlp.fc2."),
    (r"^backbone\.fc_norm\.", "fc_norm."),
    (r"^cls_head\.fc_cls\.", "head."),
]

_TIMESFORMER_ORIGINAL_RULES = [
    (r"^(cls_token|pos_embed|time_embed)$", r"\1"),
    (r"^(patch_embed\.proj|norm|head)\.", r"\1."),
    (r"^blocks\.(\d+)\.temporal_norm1\.", r"blocks.\1.temporal_norm."),
    (r"^blocks\.(\d+)\.((?:temporal_)?attn\.(?:qkv|proj)|temporal_fc|norm1|norm2|mlp\.fc[12])\.", r"blocks.\1.\2."),
]


def mmaction_timesformer(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMAction2 `TimeSformer` backbone + `TimeSformerHead` (divided space-time attention:
    `attentions.0` temporal, `attentions.1` spatial, both `nn.MultiheadAttention` whose
    `in_proj` is our fused qkv) -> ours."""
    if not any(".attentions.1." in k for k in state):
        raise CheckpointError("MMAction2 TimeSformer without divided space-time attention is not supported")
    return _rename(state, _MMACTION_TIMESFORMER_RULES)


def mmaction_vit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MMAction2 `VisionTransformer` (VideoMAE) backbone + `TimeSformerHead`/`I3DHead` -> ours.
    Its sin-cos `pos_embed` buffer is saved with the weights: it must be the table our model
    computes (else the embeddings were learned); the loader checks its length against the clip."""
    state = dict(state)
    _reject_layer_scale(state)
    if "backbone.norm.weight" in state:
        raise CheckpointError("MMAction2 VisionTransformer with use_mean_pooling=False is not supported")
    pos = state.pop("backbone.pos_embed", None)
    if pos is not None and not torch.allclose(pos.float(), sinusoid_table(*pos.shape[1:]), atol=1e-3):  # (1, N, C)
        raise CheckpointError("learned position embeddings (use_learnable_pos_emb=True) are not supported")
    return _rename(state, _MMACTION_VIT_RULES)


def timesformer_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The TimeSformer repo's `.pyth` (`model_state`, keys under `model.`) -> ours."""
    state = {k.removeprefix("model."): v for k, v in state.items()}
    if "blocks.0.temporal_attn.qkv.weight" not in state:
        raise CheckpointError("TimeSformer without divided space-time attention (space_only/joint) is not supported")
    return _rename(state, _TIMESFORMER_ORIGINAL_RULES)
