"""`sttm train`: train or fine-tune any model `models/` knows on real video files.

AdamW + cosine schedule with warm-up, label smoothing, best checkpoint by val top-1,
resumable (`last/` holds weights + `trainer.pt`). Run it under `torchrun` for several
processes (DDP: distributed sampler, rank-0 logging and checkpoints).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from models.checkpoint import Sidecars, VideoClassifier, build_model, load_model, save_model
from models.data import VideoDataset, collate, decoded, load_split, require_read
from models.scoring import Tally

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    workers: int = 2
    seed: int = 0
    on_error: str = "skip"  # a corrupt video: "skip" (reported) or "fail"
    max_steps: int | None = None  # stop early (tests, smoke runs)
    augment: tuple[str, ...] | None = None  # label-aware symmetries (models.data.SYMMETRIES); None: hflip


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _log(msg: str) -> None:
    """One line of progress (an epoch's record, a resume): rank 0 alone, through logging."""
    if _rank() == 0:
        log.info(msg)


def prepare_model(
    model_ref: str, labels: tuple[str, ...], merge: str | None, reduction: float | None, sidecars: Sidecars = Sidecars()
):
    """Load MODEL; give it a fresh head when the data set's labels differ."""
    model = load_model(model_ref, merge=merge, reduction=reduction, sidecars=sidecars)
    if model.labels != labels:
        cfg = model.config.replace(num_classes=len(labels), labels=labels)
        fresh = build_model(cfg, model.merge_config)
        state = {k: v for k, v in model.model.state_dict().items() if not k.startswith("head.")}
        fresh.model.load_state_dict(state, strict=False)
        _log(f"new classification head for {len(labels)} labels")
        model = fresh
    return model


@torch.no_grad()
def evaluate(model: VideoClassifier, loader: DataLoader) -> dict:
    """Top-1 / top-5 / per-class accuracy of a PyTorch model over a loader."""
    model.eval()
    tally = Tally(model.labels)
    for batch in map(decoded, loader):
        if batch is None:
            continue
        videos, labels = batch
        tally.add(model(videos).float().numpy(), labels.numpy())
    require_read(tally.total, loader.dataset, "val")
    return tally.scores()


@dataclass
class _Run:
    """Where training stands: what `out/last/trainer.pt` keeps for a resume."""

    epoch: int = 0  # the next epoch to run
    best: float = -1.0  # the best val top-1 so far
    step: int = 0
    history: list = field(default_factory=list)


def _init_distributed() -> bool:
    """Under torchrun (WORLD_SIZE > 1): join the process group. True when distributed."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return distributed


def _loaders(train_split, val_split, spec, cfg: TrainConfig, distributed: bool):
    """(train loader, val loader, the train set's DistributedSampler or None)."""
    train_set = VideoDataset(train_split, spec, True, cfg.on_error, cfg.augment)
    val_set = VideoDataset(val_split, spec, False, cfg.on_error)
    sampler = DistributedSampler(train_set, seed=cfg.seed) if distributed else None
    loader_args = dict(
        batch_size=cfg.batch_size, num_workers=cfg.workers, collate_fn=collate, persistent_workers=cfg.workers > 0
    )
    # a last short batch is dropped, unless it would be the only one (a set smaller than a batch)
    drop_last = len(sampler if sampler is not None else train_set) >= cfg.batch_size
    train_loader = DataLoader(train_set, shuffle=sampler is None, sampler=sampler, drop_last=drop_last, **loader_args)
    return train_loader, DataLoader(val_set, **loader_args), sampler


def _optimizer(model: VideoClassifier, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and position embeddings."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or "pos_embed" in n]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr
    )


def _lr_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """step -> learning rate: linear warm-up, then a cosine to 0."""
    total_steps = cfg.epochs * steps_per_epoch
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        if step < warmup:
            return cfg.lr * (step + 1) / warmup
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return lr_at


CHECKPOINTS = ("best", "last")  # what a run directory holds: the best checkpoint by val top-1, the latest
RUN_FILES = (*CHECKPOINTS, "summary.json")


def check_run_dir(out: Path, resume: bool) -> None:
    """Before any work: the run directory is a folder (or is made), and holds no earlier run
    unless `resume` goes on with it (a second `train -o RUN` overwrote the first one's models).
    ValueError in one line."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"-o {out} is a file: the run directory is a folder ({', '.join(RUN_FILES)})")
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not resume:
        raise ValueError(f"-o {out} holds a run ({', '.join(held)}): --resume goes on with it, or give another folder")


def _resume(out: Path, model: VideoClassifier, optim: torch.optim.Optimizer) -> _Run:
    """Model, optimiser and progress from `out/last`; a fresh run where there is none."""
    if not (out / "last" / "trainer.pt").is_file():
        _log(f"nothing to resume in {out}: a fresh run")
        return _Run()
    state = torch.load(out / "last" / "trainer.pt", map_location="cpu", weights_only=False)
    model.model.load_state_dict(load_model(out / "last").model.state_dict())
    optim.load_state_dict(state["optimizer"])
    run = _Run(state["epoch"] + 1, state["best"], state["step"], state["history"])
    _log(f"resumed from {out / 'last'} at epoch {run.epoch}")
    return run


def _train_epoch(net, model, loader, optim, lr_at, run: _Run, cfg: TrainConfig, epoch: int) -> tuple[int, float]:
    """One pass over `loader` (or up to `cfg.max_steps`); advances `run.step`. Returns
    (clips seen, summed loss)."""
    net.train()
    seen, loss_sum = 0, 0.0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=_rank() != 0, leave=False)
    for batch in map(decoded, bar):
        if batch is None:  # not one clip of it decoded (each named as skipped)
            if dist.is_initialized():  # a step skipped on one rank leaves the others waiting in all-reduce
                raise RuntimeError(
                    "a whole batch failed to decode under torchrun, so the ranks would fall out of step "
                    "(the clips are named above as skipped): fix or drop them"
                )
            continue
        videos, labels = batch
        for group in optim.param_groups:
            group["lr"] = lr_at(run.step)
        loss = F.cross_entropy(net(videos), labels, label_smoothing=cfg.label_smoothing)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        run.step += 1
        seen += len(labels)
        loss_sum += loss.item() * len(labels)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr_at(run.step):.1e}")
        if cfg.max_steps and run.step >= cfg.max_steps:
            break
    return seen, loss_sum


def _save(model: VideoClassifier, optim, run: _Run, epoch: int, top1: float, cfg: TrainConfig, out: Path) -> None:
    """`out/best` when `top1` beats the best so far; always `out/last` with the trainer's state."""
    if top1 > run.best:
        run.best = top1
        save_model(model, out / "best")
    save_model(model, out / "last")
    state = {"optimizer": optim.state_dict(), "epoch": epoch, "best": run.best, "step": run.step}
    torch.save({**state, "history": run.history, "config": asdict(cfg)}, out / "last" / "trainer.pt")


def train(
    data: str | Path,
    model_ref: str,
    out: str | Path,
    merge: str | None = None,
    reduction: float | None = None,
    cfg: TrainConfig = TrainConfig(),
    resume: bool = False,
    sidecars: Sidecars = Sidecars(),
) -> dict:
    """Train and write `out/best` (by val top-1) and `out/last` (resumable). Returns the
    final summary (also written to `out/summary.json`)."""
    distributed = _init_distributed()
    torch.manual_seed(cfg.seed)
    out = Path(out)
    check_run_dir(out, resume)
    train_split = load_split(data, "train")
    val_split = load_split(data, "val", train_split.labels)
    model = prepare_model(model_ref, train_split.labels, merge, reduction, sidecars)
    train_loader, val_loader, sampler = _loaders(train_split, val_split, model.input_spec, cfg, distributed)
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    optim = _optimizer(model, cfg)
    lr_at = _lr_schedule(cfg, max(1, len(train_loader)))
    run = _resume(out, model, optim) if resume else _Run()
    for epoch in range(run.epoch, cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        started = time.perf_counter()
        seen, loss_sum = _train_epoch(net, model, train_loader, optim, lr_at, run, cfg, epoch)
        require_read(seen, train_loader.dataset, "train")
        if _rank() == 0:
            metrics = evaluate(model, val_loader)
            record = {
                "epoch": epoch + 1,
                "train_loss": loss_sum / max(seen, 1),
                "val_top1": metrics["top1"],
                "val_top5": metrics["top5"],
                "clips_per_s": seen / (time.perf_counter() - started),
            }
            run.history.append(record)
            _log(json.dumps(record))
            _save(model, optim, run, epoch, metrics["top1"], cfg, out)
        if dist.is_initialized():
            dist.barrier()
        if cfg.max_steps and run.step >= cfg.max_steps:
            break
    summary = {
        "best_val_top1": run.best,
        "epochs": len(run.history),
        "history": run.history,
        "merge": model.merge_config.method,
        "reduction": model.merge_config.reduction,
        "gflops": model.gflops(),
    }
    if _rank() == 0:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if distributed:
        dist.destroy_process_group()
    return summary
