"""TensorRT: a clear refusal without it; a built, validated engine where it exists."""

from __future__ import annotations

import pytest

from export import tensorrt
from export.onnx import ExportError
from export.run import ExportSpec, run_export


def test_clear_error_without_tensorrt_or_gpu(tmp_path):
    reason = tensorrt.unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present")
    assert "TensorRT" in reason or "GPU" in reason
    with pytest.raises(ExportError, match="--format tensorrt"):
        run_export(ExportSpec("vit-tiny", tmp_path / "m.plan", fmt="tensorrt", quiet=True))
    assert not list(tmp_path.iterdir())  # refused before doing any work


@pytest.mark.skipif(tensorrt.unavailable_reason() is not None, reason="needs TensorRT and an NVIDIA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_builds_and_matches_onnxruntime(tmp_path, precision):
    result = run_export(ExportSpec("vit-tiny", tmp_path / "m.plan", merge="sttm", reduction=0.38, fmt="tensorrt",
                                   precision=precision, max_batch=4, quiet=True))  # fmt: skip
    assert (tmp_path / "m.plan").is_file() and (tmp_path / "m.plan.json").is_file()
    assert result.reports[-1].backend == "tensorrt" and result.reports[-1].ok
