"""The Triton model repository parses as Triton's own ModelConfig protobuf, model by model
(a real Triton serves it in tests/triton)."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from export.onnx import metadata_for
from export.triton import write_repository


def _config(directory):
    return text_format.Parse((directory / "config.pbtxt").read_text(), pb.ModelConfig())


def test_repository_layout_and_config(exported, tmp_path):
    model, onnx_path = exported("vit-tiny", "sttm")
    meta = metadata_for(model, "vit-tiny")
    dirs = write_repository(tmp_path, "vit-tiny", meta, onnx_path, max_batch=8, instances=2)
    assert [d.name for d in dirs] == ["vit-tiny", "vit-tiny_preprocess", "vit-tiny_postprocess", "vit-tiny_video"]
    directory = dirs[0]
    assert (directory / "1" / "model.onnx").read_bytes() == onnx_path.read_bytes()
    assert (directory / "labels.txt").read_text().splitlines() == list(model.labels)
    config = _config(directory)
    assert config.name == "vit-tiny" and config.backend == "python"  # our CPU backend, by default
    assert "tritonserve.python_models import ModelRunner" in (directory / "1" / "model.py").read_text()
    assert config.max_batch_size == 8
    assert [i.name for i in config.input] == ["video"] and list(config.input[0].dims) == [3, 8, 64, 64]
    assert config.input[0].data_type == pb.TYPE_FP32
    assert list(config.output[0].dims) == [len(model.labels)] and config.output[0].label_filename == "labels.txt"
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_CPU and config.instance_group[0].count == 2
    assert config.model_warmup[0].inputs["video"].zero_data and config.model_warmup[0].batch_size == 1


def test_ensemble_chains_bytes_to_labels(exported, tmp_path):
    model, onnx_path = exported("vit-tiny", "sttm")
    pre, post, video = write_repository(tmp_path, "m", metadata_for(model, "m"), onnx_path, 4)[1:]
    pre_config = _config(pre)
    assert pre_config.backend == "python" and pre_config.input[0].data_type == pb.TYPE_STRING
    assert [i.name for i in pre_config.input if i.optional] == ["num_clips", "crops", "frame_interval"]
    assert list(pre_config.output[0].dims) == [-1, 3, 8, 64, 64]  # views x the model's input
    assert (post / "labels.txt").read_text().splitlines() == list(model.labels)
    config = _config(video)
    assert config.platform == "ensemble"
    assert [o.name for o in config.output] == ["labels", "scores"]
    assert [o.data_type for o in config.output] == [pb.TYPE_STRING, pb.TYPE_FP32]
    steps = config.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["m_preprocess", "m", "m_postprocess"]
    assert steps[0].output_map["clip"] == steps[1].input_map["video"]
    assert steps[1].output_map["logits"] == steps[2].input_map["logits"]


def test_platform_runtime_and_engine(exported, tmp_path):
    model, onnx_path = exported("vit-tiny", "none")
    fake_plan = tmp_path / "x.plan"
    fake_plan.write_bytes(b"engine bytes")
    dirs = write_repository(tmp_path / "repo", "m", metadata_for(model, "m"), onnx_path, 4, engine=fake_plan,
                            runtime="platform")  # fmt: skip
    assert [d.name for d in dirs][:2] == ["m", "m_trt"]
    onnx_config = _config(dirs[0])
    assert onnx_config.platform == "onnxruntime_onnx" and not (dirs[0] / "1" / "model.py").exists()
    assert onnx_config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_AUTO  # the GPU where there is one
    config = _config(dirs[1])
    assert config.platform == "tensorrt_plan" and (dirs[1] / "1" / "model.plan").is_file()
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert _config(dirs[-1]).ensemble_scheduling.step[1].model_name == "m_trt"  # the GPU ensemble runs the engine


def test_bad_runtime_or_instances_refused(exported, tmp_path):
    model, onnx_path = exported("vit-tiny", "none")
    with pytest.raises(ValueError, match="python or platform"):
        write_repository(tmp_path, "m", metadata_for(model, "m"), onnx_path, 4, runtime="tensorrt")
    with pytest.raises(ValueError, match="instances"):
        write_repository(tmp_path, "m", metadata_for(model, "m"), onnx_path, 4, instances=0)
