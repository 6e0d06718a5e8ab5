"""What `sttm info` reports about a model: a plain dict, and its text rendering."""

from __future__ import annotations

from dataclasses import asdict

from models.classifier import VideoClassifier


def describe(model: VideoClassifier) -> dict:
    cfg, merge = model.config, model.merge_config
    merged, unmerged = model.gflops(), model.gflops(merged=False)
    t, h, w = cfg.grid
    return {
        "format": model.source.name,
        "weights_dtype": model.source.dtype,
        "arch": cfg.arch,
        "frames": cfg.num_frames,  # = input.frames, kept for existing readers
        "input_size": cfg.image_size,  # = input.size
        "token_grid": [t, h, w],
        "dim": cfg.dim,
        "depth": cfg.depth,
        "heads": cfg.heads,
        "num_labels": cfg.num_classes,
        "labels_preview": list(model.labels[:5]),
        "preprocessing": cfg.preprocessing.__dict__,
        "merge": merge.method,
        "reduction_target": merge.reduction,
        "gflops": round(merged, 3),
        "gflops_unmerged": round(unmerged, 3),
        "gflops_saved": round(1 - merged / unmerged, 4),
        "flops_convention": "multiply-adds (fvcore)",
        "tokens_per_layer": [n_in for n_in, _ in model.schedule.tokens(cfg)],
        "merge_steps": [
            {"layer": i, **step.__dict__} for i, step in enumerate(model.schedule.steps) if step is not None
        ],
        "input_spec": asdict(model.input_spec),  # as GET /v1/models and the file's metadata spell it
    }


def render(info: dict) -> str:
    pre = info["preprocessing"]
    lines = [
        f"checkpoint       {info['format']}, {info['weights_dtype']} weights",
        f"architecture     {info['arch']} (dim {info['dim']}, depth {info['depth']}, heads {info['heads']})",
        f"input            {info['frames']} frames x {info['input_size']}x{info['input_size']}, "
        f"token grid {'x'.join(map(str, info['token_grid']))}",
        f"preprocessing    mean {pre['mean']} std {pre['std']}, short side {pre['short_side']}, "
        f"{pre['sampling']} sampling (interval {pre['frame_interval']})",
        f"labels           {info['num_labels']} ({', '.join(info['labels_preview'])}"
        f"{', ...' if info['num_labels'] > 5 else ''})",
        f"merge            {info['merge']} (target reduction {info['reduction_target']:.0%})",
        f"GFLOPs (MACs)    {info['gflops']:.2f} merged, {info['gflops_unmerged']:.2f} unmerged "
        f"({info['gflops_saved']:.1%} saved)",
        f"tokens per layer {' '.join(map(str, info['tokens_per_layer']))}",
    ]
    for step in info["merge_steps"]:
        if info["arch"] == "timesformer" and step["kind"] == "temporal":
            lines.append(f"  block {step['layer']:>2}: temporal frame pairs fused -> {step['groups']} frames")
            continue
        meta = f", {step['meta']} meta" if step["meta"] else ""
        lines.append(
            f"  block {step['layer']:>2}: {step['kind']:<8} {step['groups']} group(s) of {step['size']} "
            f"-> {step['size'] - step['r']}{meta}"
        )
    return "\n".join(lines)
