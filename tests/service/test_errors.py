"""Error answers: every one JSON `{"error": {"code", "message"}}`, with the headers HTTP asks for."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.app import create_app
from service.errors import describe
from service.settings import Settings


def test_a_method_not_allowed_names_the_allowed_ones(tiny_onnx):
    """RFC 9110: a 405 carries `Allow` (Starlette sets it; the JSON handler had dropped it)."""
    client = TestClient(create_app(Settings(model=tiny_onnx)))  # routing alone: no lifespan, no model
    for method, path, allowed in (("PUT", "/v1/models", "GET"), ("TRACE", "/v2/health/live", "GET")):
        r = client.request(method, path)
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed", r.text
        assert r.headers["allow"] == allowed
    r = client.get("/v1/classify")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    for path, allowed in (("/v1/streams", "GET, POST"), ("/v1/streams/abc", "DELETE, GET")):  # two routes, one path
        assert client.put(path).headers["allow"] == allowed, path


def test_a_missing_json_body_is_named_so(tiny_onnx):
    """POST /v1/streams or infer without a body said only "Field required"."""
    missing = [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
    assert describe(missing) == "the request has no body: send a JSON object (Content-Type: application/json)"
    client = TestClient(create_app(Settings(model=tiny_onnx)))
    with client:
        for path in ("/v1/streams", "/v2/models/tiny/infer"):
            r = client.post(path, headers={"content-type": "application/json"})
            assert r.status_code == 422 and r.json()["error"]["message"] == describe(missing), (path, r.text)
