"""`sttm explain`: which patches each merged token stands for, drawn over the frames
(as ToMe's visualisations): every group of merged patches gets one colour."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from media import VideoError, load_clip
from models.checkpoint import VideoClassifier
from models.merge import follow_merge
from models.mergers import Recorder


@contextmanager
def recording(model: nn.Module):
    """Every assignment the model's mergers apply during the block, in order (`[B', 1, n', n]`,
    `None` for a frame-pair fusion). The model's computation is unchanged."""
    seen: list[torch.Tensor | None] = []
    mergers = [m for m in model.modules() if isinstance(m, Recorder)]
    for m in mergers:
        m.record = seen
    try:
        yield seen
    finally:
        for m in mergers:
            m.record = None


def merge_index(model: VideoClassifier, assigns: list[torch.Tensor | None], batch: int) -> torch.Tensor:
    """For every input patch, the final token it was merged into: `[B, t*h*w]` int64 over the
    patch grid `model.config.grid` (t-major). Ids number the final tokens (ViT: in the order
    the head sees them; TimeSformer: frame slice x tube), so equal ids = one merged token."""
    t, h, w = model.config.grid
    device = next(model.parameters()).device  # built where the model runs: a CPU index would stop a GPU
    if model.config.arch == "vit":
        index = torch.arange(t * h * w, device=device).expand(batch, -1)  # (B, N): every patch is its own token
        for assign in assigns:  # (B*g, 1, n', n): the groups of each clip, in order
            index = follow_merge(index, assign.reshape(batch, -1, *assign.shape[-2:]))  # (B, g, n', n)
        return index
    tubes, slices = torch.arange(h * w, device=device).expand(batch, -1), t  # TimeSformer: one decision per tube
    for assign in assigns:
        if assign is None:  # frame pairs fused: half the time slices
            slices //= 2
        else:
            tubes = follow_merge(tubes, assign.reshape(batch, 1, *assign.shape[-2:]))  # (B, 1, P', P)
    final_tubes = next((a.shape[-2] for a in reversed(assigns) if a is not None), h * w)
    frame_slice = torch.arange(t, device=device) // (t // slices)  # (t,): the fused slice each frame ended in
    return (frame_slice[:, None] * final_tubes + tubes[:, None, :]).flatten(1)  # (B, t*P)


class WithMergeIndex(nn.Module):
    """`video [B, 3, T, H, W] -> (logits [B, classes], merge_index [B, t*h*w] int32)`: the
    module `sttm export` traces, so the exported graph carries what the merges did."""

    def __init__(self, model: VideoClassifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with recording(self.model) as assigns:
            logits = self.model(video)
        return logits, merge_index(self.model, assigns, video.shape[0]).to(torch.int32)


def merge_groups(model: VideoClassifier, video: torch.Tensor) -> np.ndarray:
    """Final token of every original patch: `[1, 3, T, H, W] -> [t, h, w]` int ids."""
    with torch.no_grad():
        _, index = WithMergeIndex(model)(video)
    return index[0].reshape(model.config.grid).numpy()


def image_path(out: str | Path, video_path: str | Path) -> Path:
    """Where `-o OUT` writes: in a folder (one that exists, or `OUT/` that is to be made) `<video>.png`;
    else OUT, with `.png` where it has no suffix."""
    folder = Path(out).is_dir() or str(out).endswith(("/", os.sep))
    out = Path(out)
    return out / f"{Path(video_path).stem}.png" if folder else out if out.suffix else out.with_suffix(".png")


def explain(model: VideoClassifier, video_path: str | Path, out: str | Path) -> Path:
    """Decode `video_path` exactly as the server would, run the model, draw the merges into
    `out` (its suffix names the image format; none: `.png`; a directory: `<video>.png` in it).
    Returns the file written. VideoError (its message naming the video) when it cannot be read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backend_bases import FigureCanvasBase

    out = image_path(out, video_path)
    formats = FigureCanvasBase.get_supported_filetypes()
    if out.suffix[1:].lower() not in formats:  # said before the clip is decoded and the model run
        raise ValueError(f"-o {out.name}: not an image format matplotlib writes ({', '.join(sorted(formats))})")
    out.parent.mkdir(parents=True, exist_ok=True)  # as export and synth make theirs, before the work
    cfg = model.config
    try:
        clip = load_clip(video_path, model.input_spec)
    except VideoError as err:
        raise VideoError(err.code, str(err) if str(video_path) in str(err) else f"{video_path}: {err}") from None
    frames = clip.pixels[0]  # (T, S, S, 3)
    video = torch.from_numpy(clip.tensor)  # (1, 3, T, S, S)
    with torch.no_grad():
        probs = model(video).softmax(-1)[0]
    groups = merge_groups(model, video)  # (T', H', W')
    step = cfg.tubelet_size if cfg.arch == "vit" else 1
    p = cfg.patch_size
    sizes = np.bincount(groups.ravel())
    palette = np.random.default_rng(0).uniform(0.15, 1.0, (sizes.size, 3))
    panels = groups.shape[0]
    fig, axes = plt.subplots(1, panels, figsize=(1.9 * panels, 2.3), squeeze=False)
    for i, ax in enumerate(axes[0]):
        image = frames[i * step].astype(float) / 255  # (S, S, 3)
        ids = np.kron(groups[i], np.ones((p, p), dtype=int))  # (S, S): patch -> pixels
        merged = (sizes[ids] > 1)[..., None]
        ax.imshow(np.where(merged, 0.45 * image + 0.55 * palette[ids], image))
        edges = (np.diff(ids, axis=0, prepend=-1) != 0) | (np.diff(ids, axis=1, prepend=-1) != 0)
        ax.imshow(np.dstack([np.zeros_like(image), edges * 0.8]))  # group borders
        ax.set_title(f"t={i * step}", fontsize=8)
        ax.axis("off")
    top = probs.topk(min(3, probs.numel()))
    guess = ", ".join(f"{model.labels[j]} {v:.0%}" for v, j in zip(top.values.tolist(), top.indices.tolist()))
    merge = model.merge_config
    fig.suptitle(
        f"{merge.method} @ {merge.reduction:.0%}: {groups.max() + 1} tokens from {groups.size} patches — {guess}",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
