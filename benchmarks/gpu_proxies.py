"""Proxies of GPU speed that any CPU measures, so GPU work cannot silently regress where CI has
no GPU (docs/gpu.md; bounded by tests/benchmarks/test_gpu_proxies.py).

Everything runs on PyTorch's meta device (shapes and dtypes, no arithmetic): VideoMAE-B 16x224
(1568 tokens) costs well under a second a forward. Per forward of one clip:
- **attention calls** and how many a fused kernel could take: `F.scaled_dot_product_attention`
  calls recorded with their arguments, held to what PyTorch's `sdp_utils` require of
  FlashAttention on CUDA (no `attn_mask`, q/k/v of one head size, a multiple of 8, at most 256);
  a rule copied here, not asked of a GPU;
- **aten ops dispatched** (a `TorchDispatchMode` counter): each is at least one kernel launch
  in eager mode, what a small batch on a large GPU is bound by;
- **bytes of n x n intermediates per merge step**: the outputs, made inside a merger, whose last
  two dims both reach the tokens the step keeps (`n - r`) — the one-hot assignment, DPC-kNN's
  distance matrices — summed per step at batch 1.

`python -m benchmarks.gpu_proxies [--model videomae-b]` prints the table (markdown).
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from models import PRESETS, MergeConfig, build_model
from models.layers import fold_biases
from models.vit import GroupedMerge

FLASH_HEAD_MULTIPLE, FLASH_MAX_HEAD = 8, 256


@dataclass
class Proxies:
    """What one forward of one clip dispatched (see the module docstring)."""

    ops: Counter = field(default_factory=Counter)  # aten op name -> calls
    attention: list[dict] = field(default_factory=list)  # per SDPA call: head, masked, flash
    step_bytes: list[int] = field(default_factory=list)  # per merge step: bytes of n x n outputs

    @property
    def op_count(self) -> int:
        return sum(self.ops.values())

    @property
    def flash_eligible(self) -> int:
        return sum(call["flash"] for call in self.attention)

    @property
    def masked(self) -> int:
        return sum(call["masked"] for call in self.attention)


def flash_eligible(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> bool:
    """PyTorch's FlashAttention conditions (sdp_utils) that shapes alone decide."""
    head = q.shape[-1]
    same = head == k.shape[-1] == v.shape[-1]
    return mask is None and same and head % FLASH_HEAD_MULTIPLE == 0 and head <= FLASH_MAX_HEAD


class _Attention(TorchFunctionMode):
    def __init__(self, record: list[dict]) -> None:
        super().__init__()
        self.record = record

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            flash = flash_eligible(q, k, v, mask)
            self.record.append({"head": q.shape[-1], "masked": mask is not None, "flash": flash})
        return func(*args, **kwargs)


class _Dispatch(TorchDispatchMode):
    """Counts aten ops; inside a merger (`floor` set), sums the bytes of outputs at least floor x floor."""

    def __init__(self, proxies: Proxies) -> None:
        super().__init__()
        self.proxies, self.floor = proxies, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.proxies.ops[str(func.overloadpacket.__name__)] += 1
        if self.floor is not None:
            for t in torch.utils._pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.dim() >= 2 and min(t.shape[-2:]) >= self.floor:
                    self.proxies.step_bytes[-1] += t.numel() * t.element_size()
        return out


def measure(preset: str, method: str, reduction: float, fold: bool = False) -> Proxies:
    """The proxies of one forward of one clip of `preset` merged by `method` at `reduction`."""
    cfg = PRESETS[preset]
    model = build_model(cfg, MergeConfig(method=method, reduction=reduction if method != "none" else 0.0))
    model = fold_biases(model.eval().to("meta"), fold)
    video = torch.empty(1, 3, cfg.num_frames, cfg.image_size, cfg.image_size, device="meta")
    proxies = Proxies()
    dispatch = _Dispatch(proxies)

    def enter(module, args):
        proxies.step_bytes.append(0)
        dispatch.floor = module.size - module.merger.r if hasattr(module.merger, "r") else module.size // 2

    def leave(module, args, out):
        dispatch.floor = None

    hooks = []
    for module in model.modules():
        if isinstance(module, GroupedMerge):
            hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        with torch.inference_mode(), _Attention(proxies.attention), dispatch:
            model(video)
    finally:
        for hook in hooks:
            hook.remove()
    return proxies


def table(preset: str, reduction: float) -> str:
    """Markdown: one row per merge method (and STTM with the folded bias)."""
    lines = [
        f"{preset}, one clip, reduction {reduction} (meta device)",
        "| merge | aten ops / forward | SDPA calls | with a mask | FlashAttention-eligible | n x n MB / merge step |",
        "|---|---|---|---|---|---|",
    ]
    for method, fold in (("none", False), ("tome", False), ("tome", True), ("sttm", False), ("sttm", True)):
        p = measure(preset, method, reduction, fold)
        steps = ", ".join(f"{b / 2**20:.1f}" for b in p.step_bytes) or "-"
        name = f"{method}{' (bias folded)' if fold else ''}"
        lines.append(f"| {name} | {p.op_count} | {len(p.attention)} | {p.masked} | {p.flash_eligible} | {steps} |")
    return "\n".join(lines)


def fold_exactness(name: str, method: str, clips: int, reduction: float = 0.38) -> dict:
    """The folded bias against SDPA's mask in fp32, on the CPU, on generated clips: max abs logit
    difference and how many patches end in a different final token (merge decisions)."""
    from models import load_model
    from models.explain import WithMergeIndex
    from runtime.agreement import moving_squares

    own = name == "demo" and method == "sttm"  # the demo as trained (its own reduction)
    model = load_model(name, merge=method, reduction=None if own else reduction)
    videos = torch.from_numpy(moving_squares(model.input_spec, clips))
    with torch.inference_mode():
        logits, index = WithMergeIndex(model)(videos)
        folded, folded_index = WithMergeIndex(fold_biases(model))(videos)
    return {
        "model": name,
        "merge": method,
        "clips": clips,
        "max_abs_logit_diff": float((folded - logits).abs().max()),
        "patches_moved": int((folded_index != index).sum()),
        "patches": index.numel(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="videomae-b")
    parser.add_argument("--reduction", type=float, default=0.38)
    what = "also run the folded bias against the mask on CLIPS clips (real arithmetic, CPU)"
    parser.add_argument("--exactness", type=int, default=0, metavar="CLIPS", help=what)
    args = parser.parse_args(argv)
    print(table(args.model, args.reduction))
    if args.exactness:
        print("\n| model | merge | clips | max abs logit diff | patches in another token |\n|---|---|---|---|---|")
        for name in ("demo", args.model):
            for method in ("tome", "sttm"):
                r = fold_exactness(name, method, args.exactness, args.reduction)
                print(f"| {name} | {method} | {r['clips']} | {r['max_abs_logit_diff']:.2e} | "
                      f"{r['patches_moved']} of {r['patches']} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
