"""The GPU-speed proxies (benchmarks.gpu_proxies) bounded for VideoMAE-B 16x224, one clip, 0.38,
on the meta device (seconds, no arithmetic): attention a fused kernel can take, aten ops per
forward, bytes of n x n intermediates per merge step. A bound a little above today's value:
a change that adds kernels or quadratic memory fails here, where CI has no GPU to notice."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from benchmarks.gpu_proxies import measure  # noqa: E402

MB = 2**20


@pytest.fixture(scope="module")
def videomae_b():
    return {
        (method, fold): measure("videomae-b", method, 0.38, fold)
        for method, fold in (("none", False), ("tome", False), ("sttm", False), ("sttm", True))
    }


def test_unmerged_attention_is_all_flash_eligible(videomae_b):
    p = videomae_b["none", False]
    assert len(p.attention) == 12 and p.flash_eligible == 12 and p.masked == 0
    assert p.op_count <= 240 and p.step_bytes == []


def test_proportional_attention_as_a_mask_keeps_merged_blocks_off_flash(videomae_b):
    """Today's default: every block after STTM's first merge passes `log s` as attn_mask."""
    p = videomae_b["sttm", False]
    assert p.masked == 9 and p.flash_eligible == 3


def test_the_folded_bias_makes_every_block_flash_eligible(videomae_b):
    p = videomae_b["sttm", True]
    assert p.masked == 0 and p.flash_eligible == 12
    assert {call["head"] for call in p.attention} == {64, 72}  # 64 + the bias channel, padded to 8


OPS_BOUNDS = [("sttm", False, 790), ("sttm", True, 910), ("tome", False, 1390)]


@pytest.mark.parametrize(("method", "fold", "max_ops"), OPS_BOUNDS)
def test_ops_per_forward_stay_bounded(videomae_b, method, fold, max_ops):
    assert videomae_b[method, fold].op_count <= max_ops


@pytest.mark.parametrize(("method", "steps", "first_mb", "total_mb"), [("sttm", 3, 47, 115), ("tome", 12, 29, 235)])
def test_n_by_n_bytes_per_merge_step_stay_bounded(videomae_b, method, steps, first_mb, total_mb):
    sizes = videomae_b[method, False].step_bytes
    assert len(sizes) == steps
    assert sizes[0] <= first_mb * MB and sum(sizes) <= total_mb * MB


def test_folding_the_bias_adds_no_merge_bytes(videomae_b):
    assert videomae_b["sttm", True].step_bytes == videomae_b["sttm", False].step_bytes
