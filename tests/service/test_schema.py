"""Property-based API tests from the app's own OpenAPI schema (schemathesis): every
operation, with inputs that fit the schema and inputs that do not, never answers 5xx, and
answers with a documented status, content type and body."""

from __future__ import annotations

import hypothesis
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.python import asgi

from service.app import create_app
from service.settings import Settings

EXAMPLES = 20  # per operation and mode: bounded so the whole file runs in well under a minute
CONFIG = {
    "seed": 0,
    "checks": {
        "enabled": False,
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
    },
}
schemathesis.serializer.alias("video/mp4", "application/octet-stream")  # bodies for `video/*`: bytes as they are
# the operations, from the schema alone (building the app loads no model); inputs that do
# not fit the schema exist only where there is a body or a constrained query parameter
PATHS = create_app().openapi()["paths"]
CASES = [
    (method.upper(), path, mode)
    for path, item in PATHS.items()
    for method, spec in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode.is_positive or "requestBody" in spec or any(p["in"] == "query" for p in spec.get("parameters", ()))
]


@pytest.fixture(scope="module")
def api_schema(tiny_onnx):
    app = create_app(Settings(model=tiny_onnx, max_upload_mb=1.0))
    yield schemathesis.openapi.from_asgi("/openapi.json", app, config=schemathesis.Config.from_dict(CONFIG))
    asgi.shutdown_lifespans()  # schemathesis' client started the app's lifespan: drain and stop it


@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # the strategy holds a real clip
@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[f"{m} {p} {mode}" for m, p, mode in CASES])
def test_operation_conforms_to_the_schema(api_schema, clips, method, path, mode):
    operation = api_schema[path][method]
    strategy = operation.as_strategy(mode)
    if "{name}" in path:  # any name (mostly 404) or the served model's
        strategy |= operation.as_strategy(mode, path_parameters={"name": "tiny"})
    if "video/*" in operation.definition.raw.get("requestBody", {}).get("content", {}):  # a real clip, any options
        clip = (clips / "videos" / "growing_00000.mp4").read_bytes()
        strategy |= operation.as_strategy(mode, body=clip, media_type="video/*")

    @hypothesis.given(case=strategy)
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def check(case):
        case.call_and_validate()

    check()


def test_the_schema_requires_what_the_server_requires():
    """A body without a video (400 `empty_body` / `missing_file`) and an `infer` without exactly one
    input (400 `bad_input`) are refused: the schema says so, rather than calling them valid."""
    schema = create_app().openapi()
    for path in ("/v1/classify", "/v1/timeline"):
        body = schema["paths"][path]["post"]["requestBody"]
        assert body["required"] and body["content"]["multipart/form-data"]["schema"]["required"] == ["file"]
    inputs = schema["components"]["schemas"]["InferRequest"]["properties"]["inputs"]
    assert (inputs["minItems"], inputs["maxItems"]) == (1, 1)


def test_every_declared_error_is_the_error_body_and_bodies_may_be_cut():
    """Every 4xx/5xx the schema declares has the body the server sends, `ErrorBody` (FastAPI's own
    422, `HTTPValidationError`, was left on the stream routes), but the readiness probes' 503;
    the routes that read a body declare BodyLimit's 408 and 413 (POST /v1/streams declared no 413)."""
    schema = create_app().openapi()
    probes = {("/v2/health/ready", "get"), ("/v2/models/{name}/ready", "get")}
    for path, item in schema["paths"].items():
        for method, spec in item.items():
            for status, answer in spec["responses"].items():
                if status[0] in "45" and (path, method) not in probes:
                    ref = answer["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorBody"), (method, path, status, ref)
            if "requestBody" in spec:
                assert {"408", "413"} <= set(spec["responses"]), (method, path)
    assert "HTTPValidationError" not in schema["components"]["schemas"]
