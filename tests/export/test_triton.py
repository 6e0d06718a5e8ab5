"""The Triton model repository parses as Triton's own ModelConfig protobuf."""

from __future__ import annotations

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.onnx import metadata_for
from export.triton import write_repository


def test_repository_layout_and_config(exported, tmp_path):
    model, onnx_path = exported("vit-tiny", "sttm")
    meta = metadata_for(model, "vit-tiny")
    (directory,) = write_repository(tmp_path, "vit-tiny", meta, onnx_path, max_batch=8)
    assert (directory / "1" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    assert (directory / "labels.txt").read_text().splitlines() == list(model.labels)
    config = text_format.Parse((directory / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == "vit-tiny" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8
    assert [i.name for i in config.input] == ["video"] and list(config.input[0].dims) == [3, 8, 64, 64]
    assert config.input[0].data_type == model_config_pb2.TYPE_FP32
    assert list(config.output[0].dims) == [len(model.labels)] and config.output[0].label_filename == "labels.txt"
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_engine_gets_its_own_tensorrt_model(exported, tmp_path):
    model, onnx_path = exported("vit-tiny", "none")
    fake_plan = tmp_path / "x.plan"
    fake_plan.write_bytes(b"engine bytes")
    dirs = write_repository(tmp_path / "repo", "m", metadata_for(model, "m"), onnx_path, 4, engine=fake_plan)
    assert [d.name for d in dirs] == ["m", "m_trt"]
    config = text_format.Parse((dirs[1] / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.platform == "tensorrt_plan" and (dirs[1] / "1" / "model.plan").is_file()
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
