"""The analytic GMAC counter and the one-knob schedule."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from models import PRESETS, MergeConfig, build_model, make_schedule
from models.layers import Attention
from models.schedule import gmacs


def _counted_gmacs(name: str, merge: MergeConfig) -> tuple[float, float]:
    """(FlopCounterMode, analytic) multiply-adds; shapes only, on the meta device."""
    cfg = PRESETS[name]
    with torch.device("meta"):
        model = build_model(cfg, merge)
        video = torch.empty(2, 3, cfg.num_frames, cfg.image_size, cfg.image_size)
    for module in model.modules():
        if isinstance(module, Attention):
            module.explicit = True  # FlopCounterMode does not see CPU SDPA
    with FlopCounterMode(display=False) as counter:
        model(video)
    return counter.get_total_flops() / 2 / 2e9, model.gflops()  # FLOPs -> MACs, per clip


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("method,reduction", [("none", 0.0), ("tome", 0.38), ("sttm", 0.38), ("sttm", 0.5)])
def test_counter_matches_flop_counter_mode(name, method, reduction):
    counted, analytic = _counted_gmacs(name, MergeConfig(method=method, reduction=reduction))
    assert analytic == pytest.approx(counted, rel=0.02)


def test_videomae_b_unmerged_is_the_published_180_gflops():
    assert gmacs(PRESETS["videomae-b"], make_schedule(PRESETS["videomae-b"], MergeConfig())) == pytest.approx(
        180, rel=0.01
    )


@pytest.mark.parametrize("name", ["videomae-b", "timesformer-b", "videomae-s"])
@pytest.mark.parametrize("method", ["tome", "sttm"])
@pytest.mark.parametrize("reduction", [0.2, 0.38, 0.5])
def test_schedule_saves_the_target_and_not_much_more(name, method, reduction):
    cfg = PRESETS[name]
    base = gmacs(cfg, make_schedule(cfg, MergeConfig()))
    merged = gmacs(cfg, make_schedule(cfg, MergeConfig(method=method, reduction=reduction)), method)
    saved = 1 - merged / base
    assert reduction <= saved <= reduction + 0.03


def test_sttm_schedule_follows_the_design():
    cfg = PRESETS["videomae-b"]
    schedule = make_schedule(cfg, MergeConfig(method="sttm", reduction=0.38))
    steps = {i: s for i, s in enumerate(schedule.steps) if s is not None}
    assert list(steps) == [2, 5, 8]
    assert [s.kind for s in steps.values()] == ["spatial", "temporal", "spatial"]
    assert steps[2].groups == 8 and steps[2].size == 196  # one group per slice
    assert steps[5].groups == 4 and steps[5].size == 2 * steps[2].out  # pairs of adjacent slices
    tokens = [n for n, _ in schedule.tokens(cfg)]
    assert tokens[:3] == [1568] * 3 and tokens == sorted(tokens, reverse=True)


def test_unreachable_reduction_is_a_clear_error():
    cfg = PRESETS["vit-tiny"]
    with pytest.raises(ValueError, match="cannot save 95%"):
        make_schedule(cfg, MergeConfig(method="sttm", reduction=0.95))


def test_bad_merge_config_is_rejected():
    with pytest.raises(ValueError, match="unknown merge method"):
        MergeConfig(method="fast")
    with pytest.raises(ValueError, match="needs a merge method"):
        MergeConfig(method="none", reduction=0.3)
    with pytest.raises(ValueError, match="merge_layers"):
        make_schedule(PRESETS["vit-tiny"], MergeConfig(method="sttm", reduction=0.2, merge_layers=(7,)))
