"""Build, load and save models: built-in names, Hugging Face directories, original
VideoMAE `.pth`, and our own format (a directory with `config.json` + `model.safetensors`)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from media import InputSpec
from models.config import PRESETS, MergeConfig, ModelConfig
from models.convert import (
    CheckpointError,
    config_from_hf,
    config_from_original,
    timesformer_from_hf,
    unwrap_original,
    videomae_from_hf,
)
from models.schedule import gmacs, make_schedule
from models.timesformer import TimeSformer
from models.vit import VideoViT

FORMAT = "sttm-serve"
DEMO = Path(__file__).parent / "demo"  # the bundled demo model: `load_model("demo")`
FORMAT_VERSION = 1


class VideoClassifier(nn.Module):
    """A backbone plus what a user needs around it: labels, preprocessing, GFLOPs."""

    def __init__(self, cfg: ModelConfig, merge: MergeConfig) -> None:
        super().__init__()
        schedule = make_schedule(cfg, merge)
        arch = {"vit": VideoViT, "timesformer": TimeSformer}[cfg.arch]
        self.model = arch(cfg, merge, schedule)
        self.config, self.merge_config, self.schedule = cfg, merge, schedule

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.label_names

    @property
    def preprocessing(self):
        return self.config.preprocessing

    @property
    def input_spec(self) -> InputSpec:
        """What a clip must look like for this model (`media.load_clip` makes it)."""
        cfg, pre = self.config, self.config.preprocessing
        return InputSpec(cfg.num_frames, cfg.image_size, pre.mean, pre.std, pre.short_side, pre.sampling,
                         pre.frame_interval)  # fmt: skip

    def gflops(self, merged: bool = True) -> float:
        """Multiply-adds per clip, in G (fvcore's convention for "GFLOPs")."""
        if not merged:
            return gmacs(self.config, make_schedule(self.config, MergeConfig()))
        return gmacs(self.config, self.schedule, self.merge_config.method)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """`[B, 3, T, H, W]` float32, normalised -> logits `[B, num_classes]`."""
        return self.model(video)


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
        warnings.warn(f"{source}: merge weights not used by this schedule were dropped: {dropped[:4]}", stacklevel=3)
    model.model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling garbage raises anything
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"{path}: cannot read weights ({reason})") from None


def _weights_file(directory: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (directory / name).is_file():
            return directory / name
    raise CheckpointError(f"{directory}: no model.safetensors or pytorch_model.bin")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None


def load_model(
    path_or_name: str | Path,
    merge: str | None = None,
    reduction: float | None = None,
    *,
    num_frames: int = 16,
    image_size: int = 224,
    **merge_options,
) -> VideoClassifier:
    """Load a model by built-in name or checkpoint path, with a token merger plugged in.

    Args:
        path_or_name: a name from `models.PRESETS` (random weights), a Hugging Face
            directory (VideoMAE / TimeSformer), an original VideoMAE `.pth`, or our format.
        merge: "none" | "tome" | "sttm"; None keeps what our checkpoint was saved with.
        reduction: fraction of GFLOPs to save; None keeps the saved one.
        num_frames, image_size: for original `.pth` files only (their weights do not say).
        merge_options: other `MergeConfig` fields (meta_ratio, knn, proportional_attention...).
    Returns:
        An eval-mode `VideoClassifier`.
    """
    name = str(path_or_name)
    path = DEMO if name == "demo" and not Path(name).exists() else Path(name)
    saved_merge = MergeConfig()
    if name in PRESETS and not path.exists():
        cfg, state = PRESETS[name], None
    elif path.is_dir() and (path / "config.json").is_file():
        meta = _read_json(path / "config.json")
        if meta.get("format") == FORMAT:
            cfg = ModelConfig.from_dict(meta["model"])
            saved_merge = MergeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["merge"].items()})
            state = _read_state(_weights_file(path))
        else:
            processor_path = path / "preprocessor_config.json"
            processor = _read_json(processor_path) if processor_path.is_file() else None
            cfg = config_from_hf(meta, processor)
            raw = _read_state(_weights_file(path))
            state = videomae_from_hf(raw, cfg.depth) if cfg.arch == "vit" else timesformer_from_hf(raw)
    elif path.is_file():
        raw = _read_state(path)
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: not a state dict")
        state = unwrap_original(raw)
        cfg = config_from_original(state, num_frames, image_size)
    elif path.exists():
        raise CheckpointError(f"{path}: a directory without config.json")
    else:
        raise CheckpointError(f"{name}: no such file, directory or built-in model (demo, {', '.join(PRESETS)})")

    fields = dict(saved_merge.__dict__, **merge_options)
    if merge is not None:
        fields["method"] = merge
        if reduction is None and merge != saved_merge.method:
            fields["reduction"] = 0.0
    if reduction is not None:
        fields["reduction"] = reduction
    merge_cfg = MergeConfig(**fields)
    model = build_model(cfg, merge_cfg)
    if state is not None:
        load_weights(model, state, name)
    return model.eval()


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
