"""Token-merging math as small pure functions (no state, no Python loops over tokens).

Every merger here decides an *assignment* (`Assignment`): the one-hot matrix `A` of shape
`[b, n', n]` (token `i` goes to output slot `o` where `A[o, i] == 1`), the token each slot
starts from and the `r` tokens merged away; and then applies it: to features with one
matmul, to the integer statistics (sizes, positions) exactly in integers (`add_assigned`:
the kept tokens' rows gathered, plus an integer product and sum over only the `r` merged-away
tokens). This keeps merging inside an ONNX/TensorRT
graph: static shapes (n, n', m, r are Python ints), constant-K TopK, Equal + MatMul,
no scatter, no masked in-place writes. Output slots keep the original token order
(canonical order), so near-ties cannot reorder the tokens the next layer sees.

Token statistics `stats` (`[..., n, 9]`, int32) are additive sums over the original patches
a token stands for: `[s, Σt, Σh, Σw, Σt², Σth, Σtw, Σh², Σw²]` with t/h/w the patch's integer
cell on the token grid. They are integers so that merging adds them exactly under any number
of merges *and in any run-time precision*: a runtime that computes floats in bf16 (OpenVINO
on AMX) keeps integer tensors as they are, and the motion features' variances are
differences of large sums — in floats, bf16's 8 mantissa bits turn a token that spans a
single frame (variance 0, velocity 0) into one with an arbitrary velocity.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

NUM_STATS = 9
_BIG = 1e4  # larger than any cosine or distance used below
_TIE = 1e-6  # deterministic tie-break: earlier tokens win exact ties


class Assignment(NamedTuple):
    """One merge decision (leading dims `...` = batch, and any broadcast dims)."""

    matrix: torch.Tensor  # [..., n', n] float one-hot: token i goes to slot o where matrix[o, i] == 1
    kept: torch.Tensor  # [..., n'] int64: the token each slot starts from (ascending)
    merged: torch.Tensor  # [..., r] int64: the tokens merged away (into other slots)

    def unsqueeze(self, dim: int) -> Assignment:
        """The same decision with a broadcast dim inserted at leading position `dim` (>= 0)."""
        return Assignment(self.matrix.unsqueeze(dim), self.kept.unsqueeze(dim), self.merged.unsqueeze(dim))


def initial_stats(t: int, h: int, w: int) -> torch.Tensor:
    """Statistics of the unmerged token grid, t-major order: `[t*h*w, 9]` int32."""
    gt, gh, gw = (
        g.reshape(-1) for g in torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    )
    ones = torch.ones_like(gt)
    return torch.stack([ones, gt, gh, gw, gt * gt, gt * gh, gt * gw, gh * gh, gw * gw], dim=-1).to(torch.int32)


def sizes(stats: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The token sizes `s` as `[..., n, 1]` floats of `like`'s dtype."""
    return stats[..., :1].to(like.dtype)


def size_bias(stats: torch.Tensor) -> torch.Tensor:
    """Proportional-attention bias `log s` over keys: `[B, n, 9] -> [B, 1, 1, n]`."""
    return stats[..., 0].float().log()[:, None, None, :]


def _tie_break(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(n, dtype=like.dtype, device=like.device) * _TIE


def _one_hot_rows(index: torch.Tensor, n: int) -> torch.Tensor:
    """`index [b, k] -> [b, n]` float, 1 where a position appears in `index` (no scatter)."""
    positions = torch.arange(n, device=index.device)
    return (index[..., :, None] == positions).float().sum(-2)  # indices are distinct


def _assignment(dest: torch.Tensor, is_src: torch.Tensor, src: torch.Tensor) -> Assignment:
    """The assignment from each token's destination.

    Args:
        dest: `[b, n]` original index of the token each token ends up in.
        is_src: `[b, n]` 1.0 for tokens that merge away (exactly r per row).
        src: `[b, r]` the indices of those tokens.
    Returns:
        matrix `[b, n - r, n]`, output slots the kept tokens in original order; kept; merged.
    """
    n, r = dest.shape[-1], src.shape[-1]
    positions = torch.arange(n, device=dest.device, dtype=torch.int32)
    # Kept tokens sorted back to original order with a constant-K TopK (no argsort), on
    # integer keys: a runtime that lowers float math to bf16 (exact for integers up to 256
    # only) would tie a late kept token with a merged-away one and leave a slot empty.
    key = positions + (is_src > 0).to(torch.int32) * n  # merged-away tokens sort last
    kept = torch.topk(-key, n - r, dim=-1).indices  # (b, n-r), ascending original index
    return Assignment((dest[..., None, :] == kept[..., :, None]).float(), kept, src)  # (b, n-r, n)


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
        the assignment (matrix `[b, n - r, n]`).
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
    return _assignment(dest, is_src, src_idx)


def tome_assignment(metric: torch.Tensor, r: int) -> torch.Tensor:
    """ToMe bipartite soft matching: alternate tokens into sets A (even) and B (odd);
    each A token's most similar B token is its edge; the r best edges merge A into B.

    Args:
        metric: `[b, n, d]` keys averaged over heads.
        r: tokens merged away, 0 <= r <= ceil(n / 2).
    Returns:
        the assignment (matrix `[b, n - r, n]`).
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
    # Back to original order: token i sits at i // 2 among A (even i) or n_a + i // 2 among B.
    # Built on the device: a host-made index would be copied over, stalling a GPU's stream.
    order = torch.arange(n, device=metric.device)
    order = order // 2 + (order % 2) * n_a
    b_pos = torch.arange(1, n, 2, device=metric.device).expand(*match.shape[:-1], n - n_a)  # (b, n_b)
    dest = torch.cat([dest_a, b_pos], -1).index_select(-1, order)  # (b, n)
    is_src = torch.cat([src_a, torch.zeros_like(b_pos, dtype=src_a.dtype)], -1).index_select(-1, order)
    return _assignment(dest, is_src, 2 * src)  # A token a sits at 2a


def merge_tokens(assign: Assignment, x: torch.Tensor, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted merge by an assignment (broadcasts over leading dims).

    Args:
        assign: matrix `[..., n', n]`, kept `[..., n']`, merged `[..., r]`.
        x: `[..., n, c]` features.
        stats: `[..., n, 9]` additive statistics; `stats[..., 0]` is the size s.
    Returns:
        `x' = A (s x) / (A s)` `[..., n', c]` and `stats' = A stats` `[..., n', 9]`.
    """
    merged = add_assigned(assign, stats)  # (..., n', 9)
    matrix = assign.matrix.to(x.dtype)  # one-hot: exact in any dtype
    x = (matrix @ (x * sizes(stats, x))) / sizes(merged, x)  # (..., n', c)
    return x, merged


def add_assigned(assign: Assignment, stats: torch.Tensor) -> torch.Tensor:
    """`A stats` in int32, exactly: `[..., n, k]` -> `[..., n', k]`. Each slot's own row,
    gathered, plus the rows merged into it: an integer product and sum over the `r` merged-away
    tokens only (TensorRT has no integer matmul; over all `n` tokens the product was most of
    the merge's cost in bf16 and ToMe's, which merges in every block, several times over)."""
    n_out, r, k = assign.kept.shape[-1], assign.merged.shape[-1], stats.shape[-1]
    lead = stats.shape[:-2]

    def rows(index: torch.Tensor) -> torch.Tensor:  # stats rows at `index [..., m]` -> [..., m, k]
        return stats.gather(-2, index[..., None].expand(*lead, index.shape[-1], k))

    into = assign.matrix.gather(-1, assign.merged[..., None, :].expand(*assign.matrix.shape[:-2], n_out, r))
    joined = (into.to(stats.dtype).unsqueeze(-1) * rows(assign.merged).unsqueeze(-3)).sum(-2, dtype=stats.dtype)
    return rows(assign.kept) + joined  # (..., n', k)


def fuse_frame_pairs(x: torch.Tensor, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal merge that keeps divided attention's frame structure: frame 2i+1 fuses
    into frame 2i tube by tube (the matching clue of a tube is the same tube one frame
    earlier). `[B, T, P, c]`, `[B, T, P, 9]` -> `[B, T/2, P, c]`, `[B, T/2, P, 9]`."""
    B, T, P, c = x.shape
    x = x.reshape(B, T // 2, 2, P, c)  # (B, T/2, 2, P, c)
    stats = stats.reshape(B, T // 2, 2, P, NUM_STATS)  # (B, T/2, 2, P, 9)
    merged = stats.sum(2, dtype=stats.dtype)  # (B, T/2, P, 9)
    return (x * sizes(stats, x)).sum(2) / sizes(merged, x), merged


def _pair_product(v: torch.Tensor) -> torch.Tensor:
    """`[..., 3] (t, h, w) -> [..., 5] (tt, th, tw, hh, ww)`, the pairs of `second`. Slices, not a
    list index: indexing with a Python list copies the list to the device, stalling a GPU."""
    left = torch.cat([v[..., :1].expand(*v.shape[:-1], 3), v[..., 1:]], -1)  # t t t h w
    return left * torch.cat([v, v[..., 1:]], -1)  # x t h w h w


def motion_features(stats: torch.Tensor, cells: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Motion of the patches a token absorbed, from its integer statistics.

    Least-squares velocity of the merged patches' (h, w) over t, plus their mean
    position, spread and log size, in grid coordinates normalised to (0, 1) (cell `i` of
    `n` at `(i + 0.5) / n`): `[..., 9] -> [..., 9]` float =
    `[t, h, w, v_h, v_w, sd_t, sd_h, sd_w, log s]`. The (co)variances are computed as the
    exact integers `s Σab - Σa Σb` (int64: they outgrow int32 on large clips) before any
    float is formed, so they are exact in any precision: a token within one frame has
    variance and velocity exactly 0. `cells` is the grid `(T, H, W)` as a `[3]` tensor on
    `stats`' device (a module's buffer: a constant built here would be copied from the host,
    which stalls a GPU's stream at every merge).
    """
    s = stats[..., 0:1].long()
    first = stats[..., 1:4].long()  # Σt, Σh, Σw
    second = stats[..., 4:9].long()  # Σtt, Σth, Σtw, Σhh, Σww
    central = (s * second - _pair_product(first)).float()  # s² x (co)variances, in cells²
    size = s.float()
    cells = cells.float()
    mean = (first.float() / size + 0.5) / cells  # (..., 3): t, h, w
    moments = central / (size * size) / _pair_product(cells)  # (..., 5): tt, th, tw, hh, ww
    var_t, cov_th, cov_tw, var_h, var_w = moments.split(1, -1)
    velocity = torch.cat([cov_th, cov_tw], -1) / (var_t + eps)  # (..., 2)
    spread = torch.cat([var_t, var_h, var_w], -1).add(eps).sqrt()  # (..., 3)
    return torch.cat([mean, velocity, spread, size.log()], -1)


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
