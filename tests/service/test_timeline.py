"""`POST /v1/timeline` with segments and text formats, and `sttm predict --timeline`: the demo
model on a generated right-then-left video."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from cli.main import main
from service.app import create_app
from service.settings import DEMO_ONNX, Settings


@pytest.fixture(scope="module")
def demo_client():
    with TestClient(create_app(Settings(model=DEMO_ONNX)), raise_server_exceptions=False) as client:
        yield client


def _timeline(client, path, params=None, headers=None):
    files = {"file": ("clip.mp4", path.read_bytes(), "video/mp4")}
    return client.post("/v1/timeline", files=files, params=params, headers=headers)


def test_right_then_left_is_two_segments_and_the_whole_video_is_covered(demo_client, right_left_mp4):
    r = _timeline(demo_client, right_left_mp4, {"window_s": 2, "stride_s": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    duration = body["video"]["duration_s"]
    assert [s["label"] for s in body["segments"]] == ["moving_right", "moving_left"]
    right, left = body["segments"]
    assert right["start_s"] == 0 and right["end_s"] == left["start_s"] and left["end_s"] == duration
    assert 3.0 <= right["end_s"] <= 5.5 and right["score"] > 0.4 and left["score"] > 0.4  # the cut is at 4.27 s
    assert [w["start_s"] for w in body["windows"]] == list(range(8))  # 7-8.53: the partial window
    assert body["windows"][-1]["end_s"] == duration


def test_timeline_as_webvtt_and_csv(demo_client, right_left_mp4):
    vtt = _timeline(demo_client, right_left_mp4, headers={"accept": "text/vtt"})
    assert vtt.status_code == 200 and vtt.headers["content-type"].startswith("text/vtt")
    lines = vtt.text.splitlines()
    assert lines[:3] == ["WEBVTT", "", "1"] and "-->" in lines[3] and lines[4].startswith("moving_right 0.")
    csv = _timeline(demo_client, right_left_mp4, {"format": "csv", "min_score": 0.99})
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == "label,start_s,end_s,score"
    assert len(csv.text.splitlines()) < 3  # few windows are that sure: the rest is "no action"
    bad = _timeline(demo_client, right_left_mp4, {"format": "xml"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"


def test_predict_timeline(capsys, right_left_mp4):
    assert main(["predict", "demo", str(right_left_mp4), "--timeline", "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [s["label"] for s in body["segments"]] == ["moving_right", "moving_left"]
    assert main(["predict", "demo", str(right_left_mp4), "--timeline", "--format", "vtt", "--stride-s", "2"]) == 0
    assert capsys.readouterr().out.startswith("WEBVTT\n\n1\n00:00:00.000 --> ")
    assert main(["predict", "demo", "a.mp4", "b.mp4", "--timeline"]) == 2
    assert "--timeline takes one video" in capsys.readouterr().err
