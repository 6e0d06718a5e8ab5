"""Hostile uploads: a short run of the mutation fuzzer (`tests/service/fuzz.py`) on the decode
path, mutated bodies and header bombs POSTed to the real app: 4xx JSON or 200, never 5xx."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from media import Limits
from runtime.backends import load_backend
from service.app import create_app
from service.settings import Settings
from tests.service.fuzz import corpus, declare_samples, flat_h264, fuzz, make_case


@pytest.fixture(scope="module")
def seeds(clips):
    return corpus(sorted((clips / "videos").glob("*.mp4"))[:4])


def test_mutated_clips_decode_or_are_refused(tiny_onnx, seeds):
    """300 cases, each in a worker killed past the decode limit + 5 s: views of the right
    shape or a VideoError, nothing else."""
    meta = load_backend(tiny_onnx).meta
    report = fuzz(seeds, 300, meta, Limits(decode_timeout_s=5.0), seed=1, margin_s=5.0)
    assert report.cases == 300 and not report.crashes and not report.hangs, report.summary()
    assert report.ok > 0 and len(report.rejected) >= 3, report.summary()  # both sides of the decoder are reached


def test_cases_are_reproducible_and_mutate(seeds):
    first, again = make_case(seeds, 3, 17), make_case(seeds, 3, 17)
    assert first == again
    bodies = [make_case(seeds, 3, i)[1] for i in range(50)]
    assert sum(body not in seeds.values() for body in bodies) >= 45


def _post(client, data: bytes, options: dict, raw: bool):
    if raw:
        return client.post("/v1/classify", content=data, params=options, headers={"content-type": "video/mp4"})
    return client.post("/v1/classify", files={"file": ("clip.mp4", data, "video/mp4")}, params=options)


def test_mutated_and_bomb_uploads_get_4xx_json_never_5xx(tiny_onnx, seeds, clips):
    statuses = []
    with TestClient(create_app(Settings(model=tiny_onnx)), raise_server_exceptions=False) as client:
        for index in range(48):
            case, data, options = make_case(seeds, 11, index)
            r = _post(client, data, options, raw=index % 2 == 1)
            statuses.append(r.status_code)
            assert r.status_code == 200 or 400 <= r.status_code < 500, (case, r.status_code, r.text)
            if r.status_code == 200:
                assert r.json()["predictions"], case
            else:
                assert set(r.json()["error"]) == {"code", "message"}, (case, r.text)
        assert 200 in statuses and 422 in statuses, statuses
        bombs = {
            "too_large": flat_h264(8000, 8000),  # 0.2 MB declaring 96 MiB frames
            "too_long": declare_samples(flat_h264(64, 64), 20_000_000),  # 1.5 KB declaring 20 M samples
        }
        for code, data in bombs.items():
            r = _post(client, data, {}, raw=False)
            assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
        good = _post(client, (clips / "videos" / "moving_right_00000.mp4").read_bytes(), {}, raw=True)
        assert good.status_code == 200 and np.isfinite([p["score"] for p in good.json()["predictions"]]).all()
