"""The model commands (torch; `sttm info` of an exported file without it): `sttm info`, `sttm synth`,
`sttm train`, `sttm explain`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from cli.flags import Flags, at_least, over, sidecars_of


def _info(args: argparse.Namespace) -> None:
    from runtime.ladder_file import is_ladder
    from runtime.metadata import EXPORTED_SUFFIXES

    if is_ladder(args.model):
        return _info_exported(args, ladder=True)
    if args.model.endswith(EXPORTED_SUFFIXES):
        return _info_exported(args, ladder=False)
    from models import load_model
    from models.info import describe, render
    from runtime.backends import installed
    from runtime.backends.cpu import auto_plan, this_cpu

    model = load_model(args.model, merge=args.merge, reduction=args.reduction, sidecars=sidecars_of(args))
    info = {**describe(model), "served_here": auto_plan(this_cpu(), installed("openvino"))}
    if args.json:
        print(json.dumps(info, indent=2))
        return
    plan = info["served_here"]
    print(f"{render(info)}\nserved here      {plan['backend']} {plan['precision']}: {plan['reason']}")


def _info_exported(args: argparse.Namespace, ladder: bool) -> None:
    """An exported file, or a `ladder` of them (torch-free): what each carries, and what `sttm
    serve --model` runs it on here — each file loaded as the server loads it."""
    from pathlib import Path

    from runtime.ladder_file import read_ladder

    if args.merge or args.reduction is not None or args.labels or args.config:
        raise ValueError("--merge/--reduction/--labels/--config describe a checkpoint; an exported model has its own")
    if not ladder:
        info = _exported_info(args.model)
        print(json.dumps(info, indent=2) if args.json else _render_exported(args.model, info))
        return
    name, rungs = read_ladder(args.model)
    files = [str(Path(args.model) / rung.file) for rung in rungs]
    infos = [{**_exported_info(file), "measured": rung.measured} for file, rung in zip(files, rungs, strict=True)]
    if args.json:
        print(json.dumps({"ladder": name, "rungs": infos}, indent=2))
        return
    blocks = [_render_exported(file, info) for file, info in zip(files, infos, strict=True)]
    print(f"ladder           {args.model}: {name}, {len(rungs)} rungs, least merged first\n\n" + "\n\n".join(blocks))


def _exported_info(path: str) -> dict:
    from dataclasses import asdict

    from runtime import load_backend

    backend = load_backend(path)
    meta = asdict(backend.meta)
    labels = meta.pop("labels")
    return {
        **meta,
        "num_labels": len(labels),
        "labels_preview": list(labels[:5]),
        "gflops_saved": round(1 - meta["gflops"] / meta["gflops_unmerged"], 4) if meta["gflops_unmerged"] else 0.0,
        "served_here": {"backend": backend.provider, "precision": backend.precision, "reason": backend.reason},
    }


def _render_exported(path: str, info: dict) -> str:
    spec, plan, diff = info["input_spec"], info["served_here"], info["validated_diff"]
    checked = "" if diff is None else f", {diff:.3g} from PyTorch when exported (max abs logit diff)"
    return "\n".join(
        [
            f"exported         {path}: {info['name']}, {info['precision']}{checked}",
            f"architecture     {info['arch']}",
            f"input            {spec['frames']} frames x {spec['size']}x{spec['size']}, {spec['sampling']} sampling "
            f"(interval {spec['frame_interval']}), short side {spec['short_side']}",
            f"labels           {info['num_labels']} ({', '.join(info['labels_preview'])}"
            f"{', ...' if info['num_labels'] > 5 else ''})",
            f"merge            {info['merge']} (reduction {info['reduction']:.0%}, in the graph)",
            f"GFLOPs (MACs)    {info['gflops']:.2f} merged, {info['gflops_unmerged']:.2f} unmerged "
            f"({info['gflops_saved']:.1%} saved)",
            f"served here      {plan['backend']} {plan['precision']}: {plan['reason']}",
        ]
        + ([f"measured         {json.dumps(info['measured'])} (at export)"] if info.get("measured") else [])
    )


def _synth(args: argparse.Namespace) -> None:
    from models.synth import SynthConfig, generate

    sizes = generate(args.out, args.clips_per_class, SynthConfig(args.size, args.frames, args.seed), args.workers)
    print(json.dumps({"out": str(args.out), **sizes}))


def _train(args: argparse.Namespace) -> None:
    from models.train import TrainConfig, train

    # models logs each epoch's record and each skipped video; the command shows them on stdout
    logger = logging.getLogger("models")
    logger.setLevel(logging.INFO)
    logger.addHandler(logging.StreamHandler(sys.stdout))

    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        workers=args.workers,
        seed=args.seed,
        on_error=args.on_error,
        max_steps=args.max_steps,
        augment=tuple(s.strip() for s in args.augment.split(",")) if args.augment else None,
    )
    summary = train(
        args.data,
        args.model,
        args.output,
        args.merge,
        args.reduction,
        cfg,
        resume=args.resume,
        sidecars=sidecars_of(args),
    )
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(json.dumps({k: v for k, v in summary.items() if k != "history"}))


def _explain(args: argparse.Namespace) -> None:
    from models import load_model
    from models.explain import explain

    model = load_model(args.model, merge=args.merge, reduction=args.reduction, sidecars=sidecars_of(args))
    print(explain(model, args.video, args.output))


def add_info(sub, f: Flags) -> None:
    info = sub.add_parser(
        "info",
        parents=[f.checkpoint, f.merge, f.json],
        help="describe a model (a checkpoint, or an exported file and how it is served here): architecture, GFLOPs, "
        "tokens per layer",
    )
    info.set_defaults(run=_info)


def add_synth(sub, f: Flags) -> None:
    syn = sub.add_parser("synth", help="generate the motion data set (H.264 clips + CSV splits)")
    syn.add_argument("out")
    syn.add_argument("--clips-per-class", type=at_least(1), required=True)
    syn.add_argument("--seed", type=at_least(0), default=0)
    syn.add_argument("--size", type=int, default=128, help="frame side, even, at least 16")
    syn.add_argument("--frames", type=int, default=32, help="at least 2")
    syn.add_argument("--workers", type=at_least(1), default=2)
    syn.set_defaults(run=_synth)


def add_train(sub, f: Flags) -> None:
    tr = sub.add_parser(
        "train", parents=[f.merge, f.sidecars], help="train or fine-tune on a path,label CSV or class-per-folder tree"
    )
    tr.add_argument("data", help="directory with train.csv/val.csv (or train/<class>/, val/<class>/)")
    tr.add_argument("--model", required=True, help="built-in config or checkpoint to start from")
    tr.add_argument("-o", "--output", required=True, help="run directory: best/, last/, summary.json")
    tr.add_argument("--epochs", type=at_least(1), default=10)
    tr.add_argument("--batch-size", type=at_least(1), default=16)
    tr.add_argument("--lr", type=over(0), default=1e-3, help="peak learning rate (AdamW, cosine schedule)")
    tr.add_argument("--workers", type=at_least(0), default=2)
    tr.add_argument("--seed", type=at_least(0), default=0)
    tr.add_argument("--resume", action="store_true", help="continue from OUTPUT/last")
    tr.add_argument("--max-steps", type=at_least(1), default=None, help="stop after this many steps (smoke runs)")
    tr.add_argument(
        "--augment",
        default=None,
        metavar="LIST",
        help="label-aware symmetries, e.g. hflip,vflip,reverse (default: hflip where the data set "
        "allows it); each must be declared in the data set's dataset.json",
    )
    tr.add_argument("--on-error", choices=["skip", "fail"], default="skip", help="a corrupt video in the list")
    tr.set_defaults(run=_train)


def add_explain(sub, f: Flags) -> None:
    ex = sub.add_parser(
        "explain", parents=[f.checkpoint, f.merge], help="draw which patches the merger fused, over the clip's frames"
    )
    ex.add_argument("video")
    ex.add_argument("-o", "--output", required=True, help="PNG path")
    ex.set_defaults(run=_explain)
