"""The tiny ONNX model of the service tests (built with onnx.helper: no torch)."""

from tests.service.conftest import tiny_onnx  # noqa: F401 - a fixture, shared
