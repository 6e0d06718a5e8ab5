"""Synthetic data, data lists, training (single process and DDP with gloo), resuming."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from media import read_frames
from media.sampling import clip_plan
from models import load_model
from models.data import VideoDataset, collate, decoded, label_map, load_split
from models.synth import CLASSES, HFLIP_SWAPS, PAIRS, VFLIP_SWAPS, SynthConfig, generate, render_clip, write_mp4
from models.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]


def _spec(frames: int, size: int):
    """vit-tiny's preprocessing for `frames` x `size` clips."""
    return dataclasses.replace(load_model("vit-tiny").input_spec, frames=frames, size=size)


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
    assert meta["vflip_swaps"] == [list(p) for p in VFLIP_SWAPS] and meta["time_reversed_pairs"] == [
        list(p) for p in PAIRS
    ]
    first = (out / "train.csv").read_text().splitlines()[:2]
    assert first[0] == "path,label" and first[1].startswith("videos/") and first[1].endswith(",moving_right")
    frames, _, info = read_frames(out / "videos" / "growing_00000.mp4", clip_plan(16, "uniform", 4), 64)
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
    ds = VideoDataset(split, _spec(8, 64), train=True)
    right, left = CLASSES.index("moving_right"), CLASSES.index("moving_left")
    assert list(ds.maps) == ["hflip"]  # the default
    assert ds.maps["hflip"][right] == left and ds.maps["hflip"][CLASSES.index("growing")] == CLASSES.index("growing")
    video, label = ds[0]
    assert video.shape == (3, 8, 64, 64) and video.dtype == torch.float32
    # class-per-folder tree
    for name in ("a", "b"):
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "train" / name / "x.mp4").write_bytes((out / "videos" / "growing_00000.mp4").read_bytes())
    tree = load_split(tmp_path, "train")
    assert tree.labels == ("a", "b") and len(tree.items) == 2


def test_lists_and_labels_saved_by_a_spreadsheet_with_a_bom_are_read(motion, tmp_path):
    """A BOM before 'path,label' made the header a clip of a class named 'label' (13 classes, not 12)."""
    out, _ = motion
    bom = b"\xef\xbb\xbf"
    (tmp_path / "train.csv").write_bytes(
        bom + (out / "train.csv").read_bytes().replace(b"videos/", str(out / "videos/").encode())
    )
    (tmp_path / "labels.txt").write_bytes(bom + (out / "labels.txt").read_bytes())
    (tmp_path / "dataset.json").write_bytes(bom + (out / "dataset.json").read_bytes())
    split = load_split(tmp_path, "train")
    assert split.labels == tuple(CLASSES) and len(split.items) == 24
    assert split.swaps == load_split(out, "train").swaps
    (tmp_path / "labels.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"labels.txt: not UTF-8 text \(byte 0xe9 at 3\)$"):
        load_split(tmp_path, "train")


def test_label_maps_of_the_symmetries(motion, tmp_path):
    split = load_split(motion[0], "train")
    name = {i: n for i, n in enumerate(CLASSES)}
    vflip = {name[i]: name[j] for i, j in enumerate(label_map(split, "vflip")) if i != j}
    assert vflip == {
        "moving_down": "moving_up",
        "moving_up": "moving_down",
        "rotating_counterclockwise": "rotating_clockwise",
        "rotating_clockwise": "rotating_counterclockwise",
    }
    reverse = label_map(split, "reverse")
    assert all(name[reverse[CLASSES.index(a)]] == b and name[reverse[CLASSES.index(b)]] == a for a, b in PAIRS)
    (tmp_path / "train.csv").write_text("path,label\nx.mp4,open\ny.mp4,close\nz.mp4,wave\n")
    (tmp_path / "dataset.json").write_text(json.dumps({"time_reversed_pairs": [["open", "close"]]}))
    assert label_map(load_split(tmp_path, "train"), "reverse") == [1, 0, None]  # labels sorted: close, open, wave
    with pytest.raises(ValueError, match="vflip_swaps"):  # asked for, but not declared by the data set
        VideoDataset(load_split(tmp_path, "train"), _spec(8, 64), train=True, augment=("vflip",))
    with pytest.raises(ValueError, match="unknown augmentation 'spin'"):
        VideoDataset(split, _spec(8, 64), train=True, augment=("spin",))


def _object_shift(video: torch.Tensor) -> np.ndarray:
    """(dy, dx) of the bright object's centroid from the first frame to the last."""
    bright = video.mean(0).numpy() > 0  # (T, H, W): the white square on black
    ys, xs = np.indices(bright.shape[1:])
    first, last = bright[0], bright[-1]
    return np.array([(ys * last).sum() / last.sum() - (ys * first).sum() / first.sum(),
                     (xs * last).sum() / last.sum() - (xs * first).sum() / first.sum()])  # fmt: skip


def test_symmetries_move_the_clip_and_the_label_together(motion, tmp_path):
    """A white square moving right / down, through flips and time reversal: whatever the
    dataset returns, the label names the motion the frames show."""
    T, S = 16, 64
    for name, axis in (("moving_right", 1), ("moving_down", 0)):
        clip = np.zeros((T, S, S, 3), np.uint8)  # (T, H, W, 3)
        for t in range(T):
            pos = 8 + 2 * t
            square = (slice(24, 40), slice(pos, pos + 16)) if axis else (slice(pos, pos + 16), slice(24, 40))
            clip[t][square] = 255
        write_mp4(tmp_path / f"{name}.mp4", clip)
    (tmp_path / "train.csv").write_text("path,label\nmoving_right.mp4,moving_right\nmoving_down.mp4,moving_down\n")
    (tmp_path / "dataset.json").write_text((motion[0] / "dataset.json").read_text())
    (tmp_path / "labels.txt").write_text("\n".join(CLASSES) + "\n")
    split = load_split(tmp_path, "train")
    ds = VideoDataset(split, _spec(8, 48), train=True, augment=("hflip", "vflip", "reverse"))
    direction = {"moving_right": (0, 1), "moving_left": (0, -1), "moving_down": (1, 0), "moving_up": (-1, 0)}
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        for i in range(2):
            video, label = ds[i]
            shift = _object_shift(video)
            assert np.array_equal(np.sign(shift.round()), direction[CLASSES[label]]), (seed, i, CLASSES[label], shift)
            seen.add(CLASSES[label])
    assert seen == set(direction)


def test_corrupt_video_is_reported_and_skipped_or_fails(motion, tmp_path, caplog, monkeypatch):
    out, _ = motion
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    (tmp_path / "train.csv").write_text(f"path,label\nbad.mp4,growing\n{out}/videos/growing_00000.mp4,growing\n")
    split = load_split(tmp_path / "train.csv", "train", tuple(CLASSES))
    # the warning reaches caplog whatever earlier tests in this process did to logging levels
    caplog.set_level(logging.WARNING, logger="models.data")
    monkeypatch.setattr(logging.getLogger("models.data"), "disabled", False)
    assert VideoDataset(split, _spec(8, 64), train=False)[0] is None
    assert "bad.mp4" in caplog.text
    failing = VideoDataset(split, _spec(8, 64), train=False, on_error="fail")
    with pytest.raises(ValueError, match="bad.mp4"):
        decoded(collate([failing[1], failing[0]]))


def test_on_error_fail_in_a_dataloader_worker_is_one_line(motion, tmp_path):
    """`sttm eval DATA --on-error fail` printed the DataLoader worker's whole traceback as the
    error: the clip is raised in the main process, one line naming it."""
    out, _ = motion
    (tmp_path / "val.csv").write_text(f"path,label\n{out}/videos/growing_00000.mp4,growing\nmissing.mp4,growing\n")
    (tmp_path / "train.csv").write_text(f"path,label\n{out}/videos/growing_00000.mp4,growing\n")
    cfg = TrainConfig(epochs=1, batch_size=2, workers=1, on_error="fail")
    with pytest.raises(ValueError) as err:
        train(tmp_path, "vit-tiny", tmp_path / "run", cfg=cfg)
    assert str(err.value) == f"{tmp_path / 'missing.mp4'}: no such file: {tmp_path / 'missing.mp4'}"


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
    # without --resume the run is not overwritten (it was: a second run replaced best/ and last/)
    before = (tmp_path / "run" / "best" / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match=r"run holds a run \(best, last, summary.json\): --resume goes on with it"):
        train(out, "vit-tiny", tmp_path / "run", cfg=cfg)
    assert (tmp_path / "run" / "best" / "model.safetensors").read_bytes() == before
    (tmp_path / "file").write_text("")  # trained a whole run, then failed to save it into a file
    with pytest.raises(ValueError, match="-o .*file is a file: the run directory is a folder"):
        train(out, "vit-tiny", tmp_path / "file", cfg=cfg)


def test_a_train_set_smaller_than_a_batch_still_trains(motion, tmp_path):
    """The last short batch was dropped even when it was the only one: 0 steps, a model saved, exit 0."""
    out, _ = motion
    size = len(load_split(out, "train").items)
    summary = train(out, "vit-tiny", tmp_path / "run", cfg=TrainConfig(epochs=1, batch_size=size + 1, workers=0))
    (record,) = summary["history"]
    assert record["train_loss"] > 0 and record["clips_per_s"] > 0


def test_a_split_with_no_readable_clip_is_refused(motion, tmp_path):
    """Every clip skipped trained nothing and scored 0.0, with exit 0."""
    out, _ = motion
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    (tmp_path / "train.csv").write_text("path,label\nbad.mp4,growing\nmissing.mp4,growing\n")
    (tmp_path / "val.csv").write_text(f"path,label\n{out}/videos/growing_00000.mp4,growing\n")
    cfg = TrainConfig(epochs=1, batch_size=2, workers=0)
    with pytest.raises(
        ValueError, match=r"no clip of the train split could be read \(2 listed; the first: .*bad.mp4\)"
    ):
        train(tmp_path, "vit-tiny", tmp_path / "run", cfg=cfg)
    (tmp_path / "train.csv").write_text(f"path,label\n{out}/videos/growing_00000.mp4,growing\n")
    (tmp_path / "val.csv").write_text("path,label\nbad.mp4,growing\n")
    with pytest.raises(ValueError, match="no clip of the val split could be read"):
        train(tmp_path, "vit-tiny", tmp_path / "run", cfg=cfg)


def test_a_batch_that_decodes_to_nothing_under_torchrun_stops_instead_of_hanging(monkeypatch):
    """Skipped on one rank, the step would leave the other ranks waiting in all-reduce for good;
    raised, torchrun ends every rank."""
    import models.train as training

    monkeypatch.setattr(training.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(training.dist, "get_rank", lambda: 0)
    model, cfg = load_model("vit-tiny"), TrainConfig(epochs=1, workers=0)
    optim = training._optimizer(model, cfg)
    with pytest.raises(RuntimeError, match="a whole batch failed to decode under torchrun"):
        training._train_epoch(model, model, [None], optim, lambda step: 1e-3, training._Run(), cfg, 0)


def test_torchrun_ddp_two_processes_gloo(motion, tmp_path):
    out, _ = motion
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "cli", "train", str(out), "--model", "vit-tiny", "-o", str(tmp_path / "ddp"),
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


def test_an_empty_split_names_the_splits_that_hold_clips(tmp_path):
    """`sttm synth --clips-per-class 1` writes every clip to train: `sttm eval` (test by default) says so."""
    (tmp_path / "train.csv").write_text("path,label\nvideos/a.mp4,a\n")
    (tmp_path / "val.csv").write_text("path,label\n")
    (tmp_path / "test.csv").write_text("path,label\n")
    with pytest.raises(ValueError, match=r"the test split is empty \(clips in: train\)$"):
        load_split(tmp_path, "test")
    (tmp_path / "train.csv").write_text("path,label\n")
    (tmp_path / "val" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a" / "x.mp4").write_bytes(b"")
    (tmp_path / "val.csv").unlink()
    with pytest.raises(ValueError, match=r"the test split is empty \(clips in: val\)$"):
        load_split(tmp_path, "test")
    (tmp_path / "val" / "a" / "x.mp4").unlink()
    with pytest.raises(ValueError, match=r"the test split is empty$"):
        load_split(tmp_path, "test")
