"""`sttm explain`: which patches each merged token stands for, drawn over the frames
(as ToMe's visualisations): every group of merged patches gets one colour."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from media import load_clip
from models import mergers
from models.checkpoint import VideoClassifier


@contextmanager
def _recording():
    """Record every assignment the mergers apply (analysis only; the model is unchanged)."""
    seen: list[torch.Tensor] = []
    real = mergers.merge_tokens

    def record(assign, x, stats):
        seen.append(assign.detach())
        return real(assign, x, stats)

    with mock.patch.object(mergers, "merge_tokens", record):
        yield seen


def merge_groups(model: VideoClassifier, video: torch.Tensor) -> np.ndarray:
    """Final token of every original patch: `[1, 3, T, H, W] -> [T', H', W']` int ids."""
    cfg = model.config
    t, h, w = cfg.grid
    with _recording() as assigns, torch.no_grad():
        model(video)
    if cfg.arch == "vit":
        members = torch.eye(t * h * w)  # (tokens now, original patches)
        for assign in assigns:  # (groups, 1, n', n): one clip, block-diagonal over groups
            members = torch.block_diag(*assign[:, 0]) @ members
        return members.argmax(0).reshape(t, h, w).numpy()
    members = torch.eye(h * w)  # TimeSformer: tubes, the same in every frame
    for assign in assigns:  # (1, 1, P', P)
        members = assign[0, 0] @ members
    return np.broadcast_to(members.argmax(0).reshape(1, h, w).numpy(), (t, h, w)).copy()


def explain(model: VideoClassifier, video_path: str | Path, out: str | Path) -> Path:
    """Decode `video_path` exactly as the server would, run the model, draw the merges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = model.config
    clip = load_clip(video_path, model.input_spec)
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
    fig.suptitle(f"{merge.method} @ {merge.reduction:.0%}: {groups.max() + 1} tokens from {groups.size} patches — "
                 f"{guess}", fontsize=8)  # fmt: skip
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
