"""Token-merging math as small pure functions (no state, no Python loops over tokens).

Every merger here decides an *assignment* `A` of shape `[b, n', n]` (one-hot columns:
token `i` goes to output slot `o` where `A[o, i] == 1`) and then applies it to features,
sizes and positions alike with one matmul. This keeps merging inside an ONNX/TensorRT
graph: static shapes (n, n', m, r are Python ints), constant-K TopK, Equal + MatMul,
no scatter, no masked in-place writes. Output slots keep the original token order
(canonical order), so near-ties cannot reorder the tokens the next layer sees.

Token statistics `stats` (`[..., n, 9]`) are additive sums over the original patches a
token stands for: `[s, Σt, Σh, Σw, Σt², Σth, Σtw, Σh², Σw²]` with t/h/w normalised grid
coordinates in (0, 1). Merging adds them, which is exact under any number of merges.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_STATS = 9
_BIG = 1e4  # larger than any cosine or distance used below
_TIE = 1e-6  # deterministic tie-break: earlier tokens win exact ties


def initial_stats(t: int, h: int, w: int) -> torch.Tensor:
    """Statistics of the unmerged token grid, t-major order: `[t*h*w, 9]`."""
    gt, gh, gw = torch.meshgrid(
        (torch.arange(t) + 0.5) / t, (torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij"
    )
    gt, gh, gw = gt.reshape(-1), gh.reshape(-1), gw.reshape(-1)  # (t*h*w,)
    ones = torch.ones_like(gt)
    return torch.stack([ones, gt, gh, gw, gt * gt, gt * gh, gt * gw, gh * gh, gw * gw], dim=-1)


def size_bias(stats: torch.Tensor) -> torch.Tensor:
    """Proportional-attention bias `log s` over keys: `[B, n, 9] -> [B, 1, 1, n]`."""
    return stats[..., 0].log()[:, None, None, :]


def _tie_break(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(n, dtype=like.dtype, device=like.device) * _TIE


def _one_hot_rows(index: torch.Tensor, n: int) -> torch.Tensor:
    """`index [b, k] -> [b, n]` float, 1 where a position appears in `index` (no scatter)."""
    positions = torch.arange(n, device=index.device)
    return (index[..., :, None] == positions).float().sum(-2)  # indices are distinct


def _assignment(dest: torch.Tensor, is_src: torch.Tensor, r: int) -> torch.Tensor:
    """One-hot assignment from each token's destination.

    Args:
        dest: `[b, n]` original index of the token each token ends up in.
        is_src: `[b, n]` 1.0 for tokens that merge away (exactly r per row).
        r: tokens removed per row.
    Returns:
        `[b, n - r, n]` float; output slots are the kept tokens in original order.
    """
    n = dest.shape[-1]
    positions = torch.arange(n, device=dest.device, dtype=torch.int32)
    # Kept tokens sorted back to original order with a constant-K TopK (no argsort), on
    # integer keys: a runtime that lowers float math to bf16 (exact for integers up to 256
    # only) would tie a late kept token with a merged-away one and leave a slot empty.
    key = positions + (is_src > 0).to(torch.int32) * n  # merged-away tokens sort last
    kept = torch.topk(-key, n - r, dim=-1).indices  # (b, n-r), ascending original index
    return (dest[..., None, :] == kept[..., :, None]).float()  # (b, n-r, n)


def dpc_knn_score(metric: torch.Tensor, k: int) -> torch.Tensor:
    """Density-peak score `rho * delta` of each token (DPC-kNN, as TCFormer).

    Args:
        metric: `[b, n, d]`, L2-normalised.
        k: neighbours for the density (clipped to n).
    Returns:
        `[b, n]` scores; high = a dense token far from any denser one (a cluster centre).
    """
    n = metric.shape[-2]
    dist = (2.0 - 2.0 * metric @ metric.transpose(-1, -2)).clamp_min(0.0)  # (b, n, n)
    nearest = -torch.topk(-dist, min(k, n), dim=-1).values  # (b, n, k), includes self
    rho = torch.exp(-nearest.mean(-1))  # (b, n); exact ties: neither is 'denser'
    denser = (rho[..., None, :] > rho[..., :, None]).float()  # (b, i, j): rho_j > rho_i
    delta = (dist + (1.0 - denser) * _BIG).amin(-1)  # (b, n)
    has_denser = denser.amax(-1)  # (b, n): 0 only for the densest token
    delta = has_denser * delta + (1.0 - has_denser) * dist.amax(-1)
    return rho * delta


def sttm_assignment(metric: torch.Tensor, meta: int, r: int, k: int = 5) -> torch.Tensor:
    """STTM meta-guided fusion within one group of tokens.

    Picks `meta` tokens by density peaks, matches every other token to its most similar
    meta token (cosine), and merges the `r` best-matched ones into their meta token.

    Args:
        metric: `[b, n, d]` keys averaged over heads (any scale).
        meta: meta tokens per group, 1 <= meta <= n - r.
        r: tokens merged away per group, 0 <= r <= n - meta.
        k: DPC-kNN neighbours.
    Returns:
        `[b, n - r, n]` one-hot assignment.
    """
    n = metric.shape[-2]
    if not (1 <= meta <= n - r and r >= 0):
        raise ValueError(f"need 1 <= meta ({meta}) <= n - r ({n} - {r})")
    metric = F.normalize(metric.float(), dim=-1)
    score = dpc_knn_score(metric, k) - _tie_break(n, metric)  # (b, n)
    meta_idx = torch.topk(score, meta, dim=-1).indices  # (b, m)
    is_meta = _one_hot_rows(meta_idx, n)  # (b, n)
    meta_metric = metric.gather(-2, meta_idx[..., None].expand(*meta_idx.shape, metric.shape[-1]))  # (b, m, d)
    best, match = (metric @ meta_metric.transpose(-1, -2)).max(-1)  # (b, n), (b, n) in [0, m)
    best = best - is_meta * _BIG - _tie_break(n, best)  # meta tokens never merge away
    src_idx = torch.topk(best, r, dim=-1).indices  # (b, r)
    is_src = _one_hot_rows(src_idx, n)  # (b, n)
    positions = torch.arange(n, device=metric.device).expand_as(match)
    dest = torch.where(is_src > 0, meta_idx.gather(-1, match), positions)  # (b, n)
    return _assignment(dest, is_src, r)


def tome_assignment(metric: torch.Tensor, r: int) -> torch.Tensor:
    """ToMe bipartite soft matching: alternate tokens into sets A (even) and B (odd);
    each A token's most similar B token is its edge; the r best edges merge A into B.

    Args:
        metric: `[b, n, d]` keys averaged over heads.
        r: tokens merged away, 0 <= r <= ceil(n / 2).
    Returns:
        `[b, n - r, n]` one-hot assignment.
    """
    n = metric.shape[-2]
    n_a = (n + 1) // 2
    if not 0 <= r <= min(n_a, n - 1):
        raise ValueError(f"ToMe can merge at most {min(n_a, n - 1)} of {n} tokens, asked {r}")
    metric = F.normalize(metric.float(), dim=-1)
    a, b = metric[..., 0::2, :], metric[..., 1::2, :]  # (b, n_a, d), (b, n_b, d)
    best, match = (a @ b.transpose(-1, -2)).max(-1)  # (b, n_a)
    best = best - _tie_break(n_a, best)
    src = torch.topk(best, r, dim=-1).indices  # (b, r), into A
    src_a = _one_hot_rows(src, n_a)  # (b, n_a)
    a_pos = torch.arange(0, n, 2, device=metric.device).expand_as(match)  # (b, n_a)
    dest_a = torch.where(src_a > 0, 2 * match + 1, a_pos)  # (b, n_a) original indices
    # Back to original order: A/B interleave is static, so this is a constant-index gather.
    order = torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2)]).argsort().to(metric.device)
    b_pos = torch.arange(1, n, 2, device=metric.device).expand(*match.shape[:-1], n - n_a)  # (b, n_b)
    dest = torch.cat([dest_a, b_pos], -1).index_select(-1, order)  # (b, n)
    is_src = torch.cat([src_a, torch.zeros_like(b_pos, dtype=src_a.dtype)], -1).index_select(-1, order)
    return _assignment(dest, is_src, r)


def merge_tokens(assign: torch.Tensor, x: torch.Tensor, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted merge by an assignment (broadcasts over leading dims).

    Args:
        assign: `[..., n', n]` one-hot.
        x: `[..., n, c]` features.
        stats: `[..., n, 9]` additive statistics; `stats[..., 0]` is the size s.
    Returns:
        `x' = A (s x) / (A s)` `[..., n', c]` and `stats' = A stats` `[..., n', 9]`.
    """
    merged = assign @ stats  # (..., n', 9)
    x = (assign @ (x * stats[..., :1])) / merged[..., :1]  # (..., n', c)
    return x, merged


def fuse_frame_pairs(x: torch.Tensor, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal merge that keeps divided attention's frame structure: frame 2i+1 fuses
    into frame 2i tube by tube (the matching clue of a tube is the same tube one frame
    earlier). `[B, T, P, c]`, `[B, T, P, 9]` -> `[B, T/2, P, c]`, `[B, T/2, P, 9]`."""
    B, T, P, c = x.shape
    x = x.reshape(B, T // 2, 2, P, c)  # (B, T/2, 2, P, c)
    stats = stats.reshape(B, T // 2, 2, P, NUM_STATS)  # (B, T/2, 2, P, 9)
    merged = stats.sum(2)  # (B, T/2, P, 9)
    return (x * stats[..., :1]).sum(2) / merged[..., :1], merged


def motion_features(stats: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Motion of the patches a token absorbed, from its additive statistics.

    Least-squares velocity of the merged patches' (h, w) over t, plus their mean
    position, spread and log size: `[..., 9] -> [..., 9]` =
    `[t, h, w, v_h, v_w, sd_t, sd_h, sd_w, log s]`.
    """
    s = stats[..., 0:1]
    mean = stats[..., 1:4] / s  # (..., 3): t, h, w
    t, h, w = mean[..., 0:1], mean[..., 1:2], mean[..., 2:3]
    second = stats[..., 4:9] / s  # (..., 5): tt, th, tw, hh, ww
    var_t = (second[..., 0:1] - t * t).clamp_min(0.0)
    cov_th = second[..., 1:2] - t * h
    cov_tw = second[..., 2:3] - t * w
    var_h = (second[..., 3:4] - h * h).clamp_min(0.0)
    var_w = (second[..., 4:5] - w * w).clamp_min(0.0)
    velocity = torch.cat([cov_th, cov_tw], -1) / (var_t + eps)  # (..., 2)
    spread = torch.cat([var_t, var_h, var_w], -1).add(eps).sqrt()  # (..., 3)
    return torch.cat([mean, velocity, spread, s.log()], -1)


def follow_merge(index: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """Where every original patch is after one more merge (ToMe's `trace_source`, as ids).

    Args:
        index: `[B, N]` int64, for each of the N original patches the token it is in,
            among the `g * n` tokens that enter the merge (group-major).
        assign: `[B, g, n', n]` one-hot assignment of each of the `g` groups.
    Returns:
        `[B, N]` int64, the token each patch is in among the `g * n'` merged tokens.
    """
    g, m = assign.shape[1], assign.shape[2]
    slot = assign.argmax(-2)  # (B, g, n): the output slot of each token in its group
    merged = slot + torch.arange(g, device=assign.device)[:, None] * m  # (B, g, n): ids among g*n' tokens
    return merged.flatten(1).gather(1, index)  # (B, N)
