"""Which checkpoint a file is, from its first bytes and its keys: pure functions, no I/O.

A supported layout gets a name (`sttm info` and `sttm export` print it); an unsupported
one is named for what it looks like ("an MMAction2 SlowFast checkpoint") rather than by a
dump of keys it lacks.
"""

from __future__ import annotations

from collections.abc import Mapping

from models.errors import CheckpointError

# layout id -> what `sttm info` / `sttm export` say was detected
NAMES = {
    "sttm-serve": "sttm-serve (config.json + model.safetensors)",
    "hf-videomae": "Hugging Face VideoMAE (config.json + weights)",
    "hf-timesformer": "Hugging Face TimeSformer (config.json + weights)",
    "videomae": "VideoMAE / VideoMAE V2 original .pth",
    "timesformer": "TimeSformer original .pyth",
    "mmaction-vit": "MMAction2 VisionTransformer (VideoMAE) recogniser",
    "mmaction-timesformer": "MMAction2 TimeSformer recogniser",
    "builtin": "built-in config (random weights)",
}

# (a key fragment, what a checkpoint holding it is): first match wins
_NOT_TRANSFORMERS = [
    (("backbone.slow_path.", "backbone.fast_path."), "an MMAction2 SlowFast checkpoint"),
    (("backbone.conv1_s.", "backbone.conv1_t."), "an MMAction2 X3D checkpoint"),
    (("backbone.conv1a.",), "an MMAction2 C3D checkpoint"),
    (("relative_position_bias_table",), "a Video Swin Transformer checkpoint (windowed attention)"),
    (("attn.pool_q.", "attn.rel_pos_h"), "an MViT checkpoint (pooling attention)"),
    (("pathway0_stem.", "pathway1_stem."), "a PySlowFast SlowFast checkpoint"),
    (("s1.pathway0_stem.",), "a PySlowFast ResNet checkpoint"),
]
TRANSFORMERS_ONLY = "only ViT-style transformer backbones are supported (VideoMAE/ViT, VideoMAE V2, TimeSformer)"


def _conv_kind(state: Mapping, prefix: str) -> str | None:
    """ResNets: a 5-D first conv is 3-D (I3D / SlowOnly / R(2+1)D), a 4-D one 2-D (TSN / TSM)."""
    for key, value in state.items():
        if key.startswith(prefix) and key.endswith("conv.weight") and hasattr(value, "dim"):
            return "3d" if value.dim() == 5 else "2d"
    return None


def unsupported(state: Mapping) -> str | None:
    """What a non-transformer checkpoint looks like, or None when nothing says."""
    keys = list(state)
    for fragments, what in _NOT_TRANSFORMERS:
        if any(f in k for k in keys for f in fragments):
            return what
    if any(k.startswith("backbone.layer1.") for k in keys):
        kind = _conv_kind(state, "backbone.")
        if kind == "3d":
            return "an MMAction2 I3D / SlowOnly checkpoint (3-D ResNet)"
        return "an MMAction2 TSN / TSM checkpoint (2-D ResNet)"
    return None


def identify(state: Mapping) -> str:
    """Layout id of an unwrapped state dict (`convert.unwrap_original`), or a CheckpointError
    that names what it is instead."""
    keys = set(state)
    if "backbone.blocks.0.attn.qkv.weight" in keys:
        return "mmaction-vit"
    if any(k.startswith("backbone.transformer_layers.layers.0.") for k in keys):
        return "mmaction-timesformer"
    if {"model.time_embed", "time_embed"} & keys and any("blocks.0.attn.qkv" in k for k in keys):
        return "timesformer"
    weight = state.get("patch_embed.proj.weight")
    if weight is not None and getattr(weight, "dim", lambda: 0)() == 5:
        return "videomae"
    hf = next((k.split(".")[0] for k in keys if k.startswith(("videomae.", "timesformer."))), None)
    if hf:
        raise CheckpointError(
            f"this is a Hugging Face {hf} state dict: load the directory it came from, "
            "with its config.json (a config.json with only model_type will do)"
        )
    what = unsupported(state)
    if what:
        raise CheckpointError(f"this is {what}; {TRANSFORMERS_ONLY}")
    if weight is not None:
        raise CheckpointError(f"this is an image ViT checkpoint (2-D patch embedding); {TRANSFORMERS_ONLY}")
    if any(k.startswith(("backbone.", "cls_head.")) for k in keys):
        raise CheckpointError(f"this is an MMAction2 checkpoint with a backbone we do not know; {TRANSFORMERS_ONLY}")
    sample = ", ".join(sorted(keys)[:4])
    raise CheckpointError(f"unrecognised checkpoint layout (keys such as {sample}); {TRANSFORMERS_ONLY}")


# (offset, bytes, what a file starting so is): files a user may pass for a model by mistake
_NOT_WEIGHTS = [
    (4, b"ftyp", "an MP4 / MOV video"),
    (0, b"\x1a\x45\xdf\xa3", "a Matroska / WebM video"),
    (0, b"RIFF", "a RIFF file (AVI video, WAV audio)"),
    (0, b"\x89PNG", "a PNG image"),
    (0, b"\xff\xd8\xff", "a JPEG image"),
    (0, b"GIF8", "a GIF image"),
    (0, b"%PDF", "a PDF document"),
    (0, b"\x1f\x8b", "a gzip archive"),
]
HEAD_BYTES = 16  # what `not_weights` needs of a file


def not_weights(head: bytes) -> str | None:
    """What a file whose first `HEAD_BYTES` are `head` is, when it cannot be a weights file
    (None when it can): torch.save writes a zip archive (pickle protocol 2 before torch 1.6),
    safetensors a little-endian header length and then its JSON header."""
    if head.startswith((b"PK\x03\x04", b"\x80")) or (len(head) > 8 and head[8:9] == b"{"):
        return None
    if not head:
        return "an empty file"
    if head[:1] == b"\x08" and head[2:3] == b"\x12":  # ONNX's ModelProto: ir_version, then producer_name
        return "an ONNX model: the server takes a file for ONNX by its .onnx suffix (rename it)"
    for offset, magic, what in _NOT_WEIGHTS:
        if head[offset : offset + len(magic)] == magic:
            return what
    if all(32 <= c < 127 or c in b"\t\r\n" for c in head):
        return "a text file"
    return "neither a PyTorch checkpoint (zip or pickle) nor safetensors"
