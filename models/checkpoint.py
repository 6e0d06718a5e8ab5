"""Build, load and save models: built-in names, Hugging Face directories (single or sharded
weights), the original VideoMAE / VideoMAE V2 `.pth` and TimeSformer `.pyth`, MMAction2
recognisers, and our own format (a directory with `config.json` + `model.safetensors`)."""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from models import mmconfig
from models.checkpoint_formats import HEAD_BYTES, NAMES, identify, not_weights
from models.classifier import Source, VideoClassifier
from models.config import MMACTION_TIMESFORMER_PRE, MMACTION_VIT_PRE, PRESETS, TIMESFORMER_PRE, MergeConfig, ModelConfig
from models.config_inference import config_from_hf, config_from_original, config_from_state, vit_clip_from_tokens
from models.convert import (
    mmaction_timesformer,
    mmaction_vit,
    timesformer_from_hf,
    timesformer_original,
    unwrap_original,
    videomae_from_hf,
    videomae_original,
)
from models.errors import CheckpointError
from models.text import read_labels

FORMAT = "sttm-serve"
DEMO = Path(__file__).parent / "demo"  # the bundled demo model: `load_model("demo")`
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Sidecars:
    """Files that complete a checkpoint (`--labels`, `--config` on the command line):
    class names, one a line, and an MMAction2 config read as data (`models.mmconfig`)."""

    labels: str | Path | None = None
    config: str | Path | None = None


def build_model(cfg: ModelConfig, merge: MergeConfig | None = None, seed: int = 0) -> VideoClassifier:
    """A randomly initialised model (deterministic for a seed), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VideoClassifier(cfg, merge or MergeConfig())
    return model.eval()


def _is_merge_key(key: str) -> bool:
    return ".merge." in key


def load_weights(model: VideoClassifier, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load naming every missing/unexpected/mis-shaped key. Merger weights are the
    exception: absent ones stay at their no-op init (training-free use), extra ones are
    dropped with a warning (the checkpoint was trained with another merge schedule)."""
    own = model.model.state_dict()
    state = {k.removeprefix("model."): v for k, v in state.items()}
    missing = sorted(k for k in own if k not in state and not _is_merge_key(k))
    unexpected = sorted(k for k in state if k not in own and not _is_merge_key(k))
    dropped = sorted(k for k in state if k not in own and _is_merge_key(k))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if shapes:
        problems.append(f"shape mismatch: {'; '.join(shapes[:4])}")
    if problems:
        raise CheckpointError(f"{source}: " + " | ".join(problems))
    if dropped:
        names = f"{', '.join(dropped[:4])}{' ...' if len(dropped) > 4 else ''}"
        warnings.warn(
            f"{source}: {len(dropped)} merge weights this merge schedule does not use, dropped ({names})", stacklevel=3
        )
    model.model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def not_weights_file(path: Path) -> str | None:
    """What the file at `path` is when its first bytes show it cannot hold weights (`not_weights`)."""
    with open(path, "rb") as file:
        return not_weights(file.read(HEAD_BYTES))


def _read_state(path: Path) -> dict:
    """One weights file. `.bin`/`.pth` are memory-mapped (pages are read as tensors are used)."""
    if what := not_weights_file(path):
        raise CheckpointError(f"{path}: not a weights file: this is {what}")
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (pre-zip) format
    except Exception as err:  # noqa: BLE001 - unpickling garbage raises anything
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        if "Unsupported global" in str(err) or "weights_only" in reason:
            reason = (
                "it pickles Python objects besides tensors; re-save only its state_dict (MMAction2: "
                "tools/misc/publish_model.py)"
            )
        raise CheckpointError(f"{path}: cannot read weights ({reason})") from None


def _read_sharded(index_path: Path) -> dict[str, torch.Tensor]:
    """`*.index.json` + shards: each shard read in turn into one dict (its tensors are kept as
    stored, fp16 included; no shard is held twice), every key the index lists present."""
    weight_map = _read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path}: no weight_map")
    state: dict[str, torch.Tensor] = {}
    for shard in dict.fromkeys(map(str, weight_map.values())):
        if Path(shard).name != shard:  # shards sit beside their index
            raise CheckpointError(f"{index_path}: shard {shard!r} is not a file name")
        if not (index_path.parent / shard).is_file():
            raise CheckpointError(f"{index_path}: shard {shard} is missing")
        part = _read_state(index_path.parent / shard)
        if not isinstance(part, dict):
            raise CheckpointError(f"{index_path.parent / shard}: not a state dict")
        state.update(part)
    absent = sorted(set(weight_map) - set(state))
    if absent:
        raise CheckpointError(f"{index_path}: keys in no shard: {', '.join(absent[:8])}")
    return state


_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    for name in _WEIGHT_FILES:
        if (directory / name).is_file():
            path = directory / name
            return _read_sharded(path) if name.endswith(".index.json") else _read_state(path)
    raise CheckpointError(f"{directory}: no {', '.join(_WEIGHT_FILES)}")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data


def _dtype(state: dict[str, torch.Tensor]) -> str:
    counts = Counter(str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point())
    return counts.most_common(1)[0][0] if counts else "float32"


def _meta_labels(checkpoint: dict) -> tuple[str, ...]:
    """MMAction2 keeps class names in `meta.dataset_meta.classes` (1.x) or `meta.CLASSES` (0.x)."""
    meta = checkpoint.get("meta")
    if not isinstance(meta, dict):
        return ()
    classes = (meta.get("dataset_meta") or {}).get("classes") or meta.get("CLASSES") or ()
    return tuple(map(str, classes)) if isinstance(classes, (list, tuple)) else ()


def _mmaction(
    state: dict, layout: str, sidecars: Sidecars, num_frames: int | None, image_size: int | None
) -> tuple[ModelConfig, dict]:
    """MMAction2 recogniser: sizes from the weights, the rest from `--config` or its defaults."""
    config = mmconfig.read_config(sidecars.config) if sidecars.config else {}
    backbone, clip = mmconfig.backbone(config), mmconfig.clip_settings(config)
    wanted = {"mmaction-vit": "VisionTransformer", "mmaction-timesformer": "TimeSformer"}[layout]
    if backbone.get("type") not in (None, wanted):
        raise CheckpointError(f"{sidecars.config} describes a {backbone['type']} backbone, the weights a {wanted}")
    norm = backbone.get("norm_cfg") if isinstance(backbone.get("norm_cfg"), dict) else {}
    eps = mmconfig.positive(norm.get("eps", 1e-6), "norm_cfg.eps", float)
    heads = mmconfig.positive(backbone.get("num_heads"), "num_heads")
    frames = num_frames or mmconfig.positive(backbone.get("num_frames") or clip.get("num_frames"), "num_frames")
    size = image_size or mmconfig.positive(backbone.get("img_size") or clip.get("image_size"), "img_size")
    if layout == "mmaction-timesformer":
        state = mmaction_timesformer(state)
        pre = mmconfig.preprocessing(clip, MMACTION_TIMESFORMER_PRE)
        cfg = config_from_state(
            state, "timesformer", num_frames=frames, image_size=size, heads=heads, norm_eps=eps, preprocessing=pre
        )
        return _short_side_default(cfg, clip), state
    pos = state.get("backbone.pos_embed")  # (1, N, C): the sin-cos table is saved as a buffer
    weight = state.get("backbone.patch_embed.projection.weight")  # (C, 3, t, p, p)
    if pos is not None and weight is not None:  # tokens = T/t * (size/p)^2
        solved = vit_clip_from_tokens(pos.shape[1], weight.shape[2], weight.shape[-1], frames, size)
        if solved is None:
            raise CheckpointError(
                f"pos_embed has {pos.shape[1]} tokens, which no clip of {frames or '?'} frames x {size or '?'}px "
                "gives: pass the model's --config (clip_len, img_size)"
            )
        frames, size = solved
    state = mmaction_vit(state)
    pre = mmconfig.preprocessing(clip, MMACTION_VIT_PRE)
    cfg = config_from_state(
        state,
        "vit",
        num_frames=frames,
        image_size=size,
        heads=heads,
        norm_eps=eps,
        head_norm_eps=eps,
        preprocessing=pre,
    )
    if pos is not None and pos.shape[1] != cfg.num_tokens:
        raise CheckpointError(
            f"pos_embed has {pos.shape[1]} tokens, {cfg.num_frames} frames of {cfg.image_size}px give "
            f"{cfg.num_tokens}: pass the model's --config (clip_len, img_size)"
        )
    return _short_side_default(cfg, clip), state


def _short_side_default(cfg: ModelConfig, clip: dict) -> ModelConfig:
    """No Resize in the config: resize the short side to the crop (MMAction2's test pipelines
    resize to 224 and crop 224)."""
    if "short_side" in clip:
        return cfg
    return cfg.replace(preprocessing=dataclasses.replace(cfg.preprocessing, short_side=cfg.image_size))


# `sttm export`'s files by suffix (`runtime.metadata.EXPORTED_SUFFIXES`, which models may not import)
LADDER_FILE = "ladder.json"  # what marks a ladder (runtime.ladder_file's: models does not import runtime)
EXPORTED = {
    ".onnx": "ONNX",
    ".xml": "OpenVINO IR",
    ".plan": "TensorRT engine",
    ".engine": "TensorRT engine",
    ".pt2": "torch.export program",
}


def _from_file(
    path: Path, sidecars: Sidecars, num_frames: int | None, image_size: int | None
) -> tuple[ModelConfig, dict, Source]:
    """A single-file checkpoint: which one it is, its config and its weights in our names."""
    if path.suffix in EXPORTED:  # what `sttm export` writes: a runtime's file, no weights to read here
        raise CheckpointError(
            f"{path}: an exported model ({EXPORTED[path.suffix]}), not a checkpoint: `sttm serve --model`, "
            "`sttm predict` and `sttm eval` run it; this command takes the checkpoint it was exported from"
        )
    checkpoint = _read_state(path)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a state dict")
    state = unwrap_original(checkpoint)
    layout = identify(state)
    if layout.startswith("mmaction"):
        cfg, state = _mmaction(state, layout, sidecars, num_frames, image_size)
    elif sidecars.config:
        raise CheckpointError(f"--config is for MMAction2 checkpoints; this is a {NAMES[layout]}")
    elif layout == "timesformer":
        state = timesformer_original(state)
        cfg = config_from_state(
            state, "timesformer", num_frames=num_frames, image_size=image_size, preprocessing=TIMESFORMER_PRE
        )
    else:
        state = videomae_original(state)
        cfg = config_from_original(state, num_frames, image_size)
    labels = _meta_labels(checkpoint)
    if labels and len(labels) == cfg.num_classes:
        cfg = cfg.replace(labels=labels)
    return cfg, state, Source(layout, _dtype(state))


def load_model(
    path_or_name: str | Path,
    merge: str | None = None,
    reduction: float | None = None,
    *,
    sidecars: Sidecars = Sidecars(),
    num_frames: int | None = None,
    image_size: int | None = None,
    **merge_options,
) -> VideoClassifier:
    """Load a model by built-in name or checkpoint path, with a token merger plugged in.

    Args:
        path_or_name: a name from `models.PRESETS` (random weights), a Hugging Face
            directory (VideoMAE / TimeSformer, sharded or not), an original VideoMAE /
            VideoMAE V2 `.pth` or TimeSformer `.pyth`, an MMAction2 `.pth`, or our format.
        merge: "none" | "tome" | "sttm"; None keeps what our checkpoint was saved with.
        reduction: fraction of GFLOPs to save; None keeps the saved one.
        sidecars: a labels file (any format) and an MMAction2 config (MMAction2 only).
        num_frames, image_size: for ViT `.pth` files whose weights do not say (default
            16 x 224, or what an MMAction2 config / position table says).
        merge_options: other `MergeConfig` fields (meta_ratio, knn, proportional_attention...).
    Returns:
        An eval-mode `VideoClassifier`.
    """
    name = str(path_or_name)
    cfg, state, source, saved_merge = _read(name, sidecars, num_frames, image_size)
    if sidecars.labels:
        cfg = _with_labels(cfg, sidecars.labels)
    model = build_model(cfg, _merge_config(saved_merge, merge, reduction, merge_options))
    if state is not None:
        load_weights(model, state, name)
    model.source = source
    return model.eval()


Weights = dict[str, torch.Tensor] | None  # a state dict in our key names; None: random (a preset)


def _read(name: str, sidecars: Sidecars, num_frames: int | None, image_size: int | None):
    """A name or path -> (ModelConfig, state dict or None, Source, the MergeConfig it was saved with)."""
    path = DEMO if name == "demo" and not Path(name).exists() else Path(name)
    if name in PRESETS and not path.exists():
        return PRESETS[name], None, Source(), MergeConfig()
    if path.is_dir() and (path / "config.json").is_file():
        read = _from_directory(path)
        if sidecars.config:
            raise CheckpointError(f"--config is for MMAction2 checkpoints; this is a {read[2].name}")
        return read
    if path.is_file():
        return (*_from_file(path, sidecars, num_frames, image_size), MergeConfig())
    if (path / LADDER_FILE).is_file():
        raise CheckpointError(
            f"{path}: a ladder of exported models, not a checkpoint: `sttm serve --model`, `sttm predict` and "
            "`sttm label` run it, `sttm eval` one rung's file; this command takes the checkpoint it was exported from"
        )
    if path.exists():
        raise CheckpointError(f"{path}: a directory without config.json")
    raise CheckpointError(f"{name}: no such file, directory or built-in model (demo, {', '.join(PRESETS)})")


def _from_directory(path: Path) -> tuple[ModelConfig, Weights, Source, MergeConfig]:
    """Our format (`save_model`) or a Hugging Face directory (VideoMAE / TimeSformer)."""
    meta = _read_json(path / "config.json")
    state = _read_weights(path)
    if meta.get("format") == FORMAT:
        merge = MergeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["merge"].items()})
        return ModelConfig.from_dict(meta["model"]), state, Source("sttm-serve", _dtype(state)), merge
    processor_path = path / "preprocessor_config.json"
    processor = _read_json(processor_path) if processor_path.is_file() else None
    cfg, source = config_from_hf(meta, processor, state), Source(f"hf-{meta['model_type']}", _dtype(state))
    state = videomae_from_hf(state, cfg.depth) if cfg.arch == "vit" else timesformer_from_hf(state)
    return cfg, state, source, MergeConfig()


def _with_labels(cfg: ModelConfig, labels_path: Path) -> ModelConfig:
    labels = read_labels(labels_path)
    if len(labels) != cfg.num_classes:
        raise CheckpointError(f"{labels_path}: {len(labels)} labels for a head of {cfg.num_classes} classes")
    return cfg.replace(labels=labels)


def _merge_config(saved: MergeConfig, merge: str | None, reduction: float | None, options: dict) -> MergeConfig:
    """The saved merge config, overridden by what the caller asks: a new method starts at
    reduction 0 unless a reduction is given too."""
    fields = dict(saved.__dict__, **options)
    if merge is not None:
        fields["method"] = merge
        if reduction is None and merge != saved.method:
            fields["reduction"] = 0.0
    if reduction is not None:
        fields["reduction"] = reduction
    return MergeConfig(**fields)


def save_model(model: VideoClassifier, directory: str | Path, half: bool = False) -> Path:
    """Write our format: `config.json` (model + merge config) and `model.safetensors`
    (`half=True` stores fp16 weights — half the size; they load back as fp32)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "merge": model.merge_config.__dict__,
    }
    (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in model.model.state_dict().items()
    }
    save_file(state, directory / "model.safetensors")
    return directory
