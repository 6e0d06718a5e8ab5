"""Synthetic data, data lists, training (single process and DDP with gloo), resuming."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import load_model
from models.data import VideoDataset, load_split
from models.synth import CLASSES, HFLIP_SWAPS, PAIRS, SynthConfig, generate, render_clip
from models.train import TrainConfig, train
from models.video import read_frames

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def motion(tmp_path_factory):
    out = tmp_path_factory.mktemp("motion")
    sizes = generate(out, clips_per_class=4, cfg=SynthConfig(size=64, frames=16, seed=3), workers=1)
    return out, sizes


def test_synth_writes_splits_labels_and_real_h264(motion):
    out, sizes = motion
    assert sizes == {"train": 24, "val": 12, "test": 12}
    assert (out / "labels.txt").read_text().split() == CLASSES and len(CLASSES) >= 12
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["hflip_swaps"] == [list(p) for p in HFLIP_SWAPS]
    first = (out / "train.csv").read_text().splitlines()[:2]
    assert first[0] == "path,label" and first[1].startswith("videos/") and first[1].endswith(",moving_right")
    frames, _, info = read_frames(out / "videos" / "growing_00000.mp4", None, 64, clip_len=16, sampling="uniform")
    assert info.codec == "h264" and info.frames == 16 and frames.shape == (1, 16, 64, 64, 3)


def test_synth_is_deterministic_and_pairs_are_time_reversals():
    cfg = SynthConfig(size=32, frames=8, seed=1)
    for motion in range(len(PAIRS)):
        forward = render_clip(motion, False, cfg, np.random.default_rng([1, 7]))
        again = render_clip(motion, False, cfg, np.random.default_rng([1, 7]))
        backward = render_clip(motion, True, cfg, np.random.default_rng([1, 7]))
        assert np.array_equal(forward, again) and np.array_equal(backward, forward[::-1])
        assert np.abs(forward[0].astype(int) - forward[-1].astype(int)).mean() > 1  # something moves


def test_data_lists_and_flip_swaps(motion, tmp_path):
    out, _ = motion
    split = load_split(out, "train")
    assert split.labels == tuple(CLASSES) and len(split.items) == 24
    ds = VideoDataset(split, load_model("vit-tiny").preprocessing, 8, 64, train=True)
    right, left = CLASSES.index("moving_right"), CLASSES.index("moving_left")
    assert ds.flip_to[right] == left and ds.flip_to[CLASSES.index("growing")] == CLASSES.index("growing")
    video, label = ds[0]
    assert video.shape == (3, 8, 64, 64) and video.dtype == torch.float32
    # class-per-folder tree
    for name in ("a", "b"):
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "train" / name / "x.mp4").write_bytes((out / "videos" / "growing_00000.mp4").read_bytes())
    tree = load_split(tmp_path, "train")
    assert tree.labels == ("a", "b") and len(tree.items) == 2


def test_corrupt_video_is_reported_and_skipped_or_fails(motion, tmp_path, capsys):
    out, _ = motion
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    (tmp_path / "train.csv").write_text(f"path,label\nbad.mp4,growing\n{out}/videos/growing_00000.mp4,growing\n")
    split = load_split(tmp_path / "train.csv", "train", tuple(CLASSES))
    pre = load_model("vit-tiny").preprocessing
    assert VideoDataset(split, pre, 8, 64, train=False)[0] is None
    assert "bad.mp4" in capsys.readouterr().out
    with pytest.raises(ValueError, match="bad.mp4"):
        VideoDataset(split, pre, 8, 64, train=False, on_error="fail")[0]


def test_train_resume_and_eval(motion, tmp_path):
    out, _ = motion
    cfg = TrainConfig(epochs=2, batch_size=4, workers=0, max_steps=3)
    summary = train(out, "vit-tiny", tmp_path / "run", merge="sttm", reduction=0.3, cfg=cfg)
    assert summary["merge"] == "sttm" and (tmp_path / "run" / "best" / "model.safetensors").is_file()
    model = load_model(tmp_path / "run" / "best")
    assert model.labels == tuple(CLASSES) and model.merge_config.method == "sttm"
    resumed = train(out, "vit-tiny", tmp_path / "run", cfg=TrainConfig(epochs=2, batch_size=4, workers=0),
                    merge="sttm", reduction=0.3, resume=True)  # fmt: skip
    assert resumed["epochs"] == 2 and resumed["history"][0] == summary["history"][0]


def test_torchrun_ddp_two_processes_gloo(motion, tmp_path):
    out, _ = motion
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "service.cli", "train", str(out), "--model", "vit-tiny", "-o", str(tmp_path / "ddp"),
           "--epochs", "1", "--batch-size", "4", "--workers", "0", "--max-steps", "2"]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count('"best_val_top1"') == 1  # rank 0 alone reports
    assert load_model(tmp_path / "ddp" / "best").labels == tuple(CLASSES)


def test_camera_jitter_stays_inside_the_canvas():
    cfg = SynthConfig(size=32, frames=64, seed=0)
    for seed in range(40):  # long clips: the jitter random walk reaches its bound
        clip = render_clip(seed % len(PAIRS), False, cfg, np.random.default_rng([12345, seed]))
        assert clip.shape == (64, 32, 32, 3)
