"""`load_clip`: one path from a source to the model's input, whichever views are asked for."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest

from media import InputSpec, Jitter, VideoError, Views, load_clip
from media.transforms import normalize
from tests.media.clips import levels, numbered_clip

SPEC = InputSpec(frames=4, size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), short_side=48, sampling="uniform")


def test_views_are_crops_times_clips_normalised_from_the_sampled_frames(tmp_path):
    path = numbered_clip(tmp_path / "n.mp4")  # 40 frames, 48x64, frame i at grey level 5*i
    clip = load_clip(path, SPEC, Views(num_clips=2, crops=3))
    assert clip.tensor.shape == (6, 3, 4, 32, 32) and clip.tensor.dtype == np.float32
    assert clip.pixels.shape == (6, 4, 32, 32, 3) and clip.indices.shape == (2, 4)
    np.testing.assert_array_equal(clip.tensor, normalize(clip.pixels, SPEC.mean, SPEC.std))
    # crop-major: views 0-1 are the left crop of clips 0 and 1, and each shows its sampled frames
    np.testing.assert_array_equal(levels(clip.pixels[:2]), clip.indices)
    assert clip.info.frames == 40 and clip.decode_s > 0 and clip.preprocess_s >= 0


def test_views_default_to_the_model_sampling_and_can_override_it(tmp_path):
    path = numbered_clip(tmp_path / "n.mp4")
    assert load_clip(path, SPEC).indices.tolist() == [[5, 15, 25, 35]]  # uniform: segment centres
    dense = load_clip(path, SPEC, Views(sampling="dense", frame_interval=2))
    assert dense.indices.tolist() == [[16, 18, 20, 22]]  # one dense clip, centred
    late = load_clip(path, SPEC, Views(start_s=2.0, end_s=3.0))
    assert late.indices.min() >= 20 and late.indices.max() < 30


@pytest.mark.parametrize("sampling", [None, "uniform"])
def test_a_frame_interval_where_sampling_is_not_dense_is_refused_not_ignored(sampling):
    with pytest.raises(VideoError, match="frame_interval applies to dense sampling only; .* is uniform") as err:
        Views(sampling=sampling, frame_interval=8).plan(SPEC)  # SPEC samples uniform
    assert err.value.code == "bad_option"


def test_jitter_is_reproducible_for_a_seed_and_varies_across_seeds(tmp_path):
    path = numbered_clip(tmp_path / "n.mp4")
    a, b = (load_clip(path, SPEC, Jitter(random.Random(7))) for _ in range(2))
    assert a.tensor.shape == (1, 3, 4, 32, 32)
    np.testing.assert_array_equal(a.tensor, b.tensor)
    others = [load_clip(path, SPEC, Jitter(random.Random(seed))) for seed in range(3)]
    assert any(not np.array_equal(a.tensor, o.tensor) for o in others)


def test_training_data_in_test_mode_is_exactly_what_the_server_computes(tmp_path):
    """The data set's test-mode item is `load_clip`'s first view: trained as served."""
    pytest.importorskip("torch")
    from models.data import Split, VideoDataset

    path = numbered_clip(tmp_path / "n.mp4")
    item, label = VideoDataset(Split(((path, 0),), ("a",)), SPEC, train=False)[0]
    assert label == 0
    np.testing.assert_array_equal(item.numpy(), load_clip(path, SPEC).tensor[0])


def test_a_path_bytes_and_a_file_object_give_the_same_clip(tmp_path):
    path = numbered_clip(tmp_path / "n.mp4")
    data = path.read_bytes()
    clips = [load_clip(source, SPEC) for source in (path, str(path), data, io.BytesIO(data))]
    for clip in clips[1:]:
        np.testing.assert_array_equal(clip.tensor, clips[0].tensor)
        assert clip.info == clips[0].info
