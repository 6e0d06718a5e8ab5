"""The pure parts of the Triton Python-backend models (the models themselves run in a real
Triton in tests/triton): request options, per-request rows, and the answer."""

from __future__ import annotations

import numpy as np
import pytest

from media import InputSpec, VideoError, Views
from runtime.metadata import ModelMetadata
from runtime.postprocess import average_views, top_k
from runtime.settings import RuntimeSettings
from tritonserve.python_models import answer, clip_tensor, split_rows, views_of

SPEC = InputSpec(4, 32, (0.5,) * 3, (0.5,) * 3, 32, "dense", 2)
META = ModelMetadata("m", "vit", ("a", "b", "c"), SPEC, "none", 0.0, 1.0, 1.0)


def test_views_from_optional_inputs():
    assert views_of({}, 30) == Views()
    assert views_of({"num_clips": 2, "crops": 3, "frame_interval": 8}, 30) == Views(None, 8, 2, 3)
    for options, message in (({"crops": 2}, "crops must be 1 or 3"), ({"num_clips": 0}, ">= 1"),
                             ({"num_clips": 11, "crops": 3}, "over 30 views")):  # fmt: skip
        with pytest.raises(VideoError, match=message) as caught:
            views_of(options, 30)
        assert caught.value.code == "bad_option"


def test_rows_go_back_to_their_requests():
    batch = np.arange(12, dtype=np.float32).reshape(6, 2)
    parts = split_rows(batch, [1, 3, 2])
    assert [p.shape[0] for p in parts] == [1, 3, 2]
    np.testing.assert_array_equal(np.concatenate(parts), batch)


def test_answer_is_classify_top_k_of_the_averaged_views():
    logits = np.array([[1.0, 3.0, 2.0], [0.5, 4.0, 0.0]], np.float32)
    labels, scores = answer(logits, META.labels, 2)
    expected = top_k(average_views(logits), META.labels, 2)
    assert list(labels) == [p.label.encode() for p in expected] == [b"b", b"c"]
    np.testing.assert_allclose(scores, [p.score for p in expected], rtol=1e-6)
    assert scores.dtype == np.float32 and len(answer(logits, META.labels, None)[0]) == 3  # top 5 of 3 labels
    for k in (0, -2):  # refused as /v1/classify refuses it, not quietly answered as top 1
        with pytest.raises(VideoError, match=f"top_k must be at least 1, not {k}") as err:
            answer(logits, META.labels, k)
        assert err.value.code == "bad_option"


def test_an_upload_over_the_limit_is_refused_before_decoding():
    with pytest.raises(VideoError) as caught:
        clip_tensor(b"\0" * 2048, META, Views(), RuntimeSettings(max_upload_mb=0.001))
    assert caught.value.code == "too_large"
    with pytest.raises(VideoError) as caught:
        clip_tensor(b"not a video", META, Views(), RuntimeSettings())
    assert caught.value.code == "not_a_video"
