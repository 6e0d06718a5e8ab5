from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from media import InputSpec
from models.synth import CLASSES, SynthConfig, generate
from runtime.metadata import ModelMetadata

TINY_META = ModelMetadata(
    name="tiny",
    arch="vit",
    labels=tuple(CLASSES),
    input_spec=InputSpec(8, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 64, "uniform", 4),
    merge="none",
    reduction=0.0,
    gflops=0.0,
    gflops_unmerged=0.0,
)


def write_tiny_onnx(path, meta: ModelMetadata = TINY_META, work: int = 0, seed: int = 0):
    """A small model with the metadata `sttm export` writes (random weights: fast, not accurate).
    Built with `onnx.helper`, not exported with torch, so the service tests run where torch is
    not installed: per channel and frame, the mean pixel (so frame order matters), then one
    linear layer. `[B, 3, T, S, S]` -> `[B, classes]`. `work` > 0 first runs a 3x3x3
    convolution with that many output channels (real compute, ~`work` x 0.2 MMACs per frame
    of 64x64): rungs of a test ladder that cost what their reductions say."""
    from onnx import TensorProto, helper, numpy_helper, save_model

    frames, size, classes = meta.input_spec.frames, meta.input_spec.size, len(meta.labels)
    channels = work or 3
    rng = np.random.default_rng(seed)
    weights = {
        "axes": np.array([3, 4], np.int64),
        "flat": np.array([0, channels * frames], np.int64),
        "w": rng.normal(0, 1, (channels * frames, classes)).astype(np.float32),
        "b": rng.normal(0, 0.1, classes).astype(np.float32),
    }
    nodes = [helper.make_node("ReduceMean", ["features3d", "axes"], ["pooled"], keepdims=0)]
    if work:
        weights["k"] = rng.normal(0, 0.2, (work, 3, 3, 3, 3)).astype(np.float32)
        nodes.insert(0, helper.make_node("Conv", [meta.input_name, "k"], ["features3d"], pads=[1] * 6))
    else:
        nodes.insert(0, helper.make_node("Identity", [meta.input_name], ["features3d"]))
    graph = helper.make_graph(
        [
            *nodes,
            helper.make_node("Reshape", ["pooled", "flat"], ["features"]),
            helper.make_node("MatMul", ["features", "w"], ["scores"]),
            helper.make_node("Add", ["scores", "b"], [meta.output_name]),
        ],
        "tiny",
        [helper.make_tensor_value_info(meta.input_name, TensorProto.FLOAT, ["batch", 3, frames, size, size])],
        [helper.make_tensor_value_info(meta.output_name, TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    helper.set_model_props(model, meta.to_props())
    save_model(model, path)
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory):
    """`write_tiny_onnx`: `[B, 3, 8, 64, 64]` -> `[B, 12]`, the motion labels."""
    return write_tiny_onnx(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    """Generated clips of known class (the demo model's input size)."""
    out = tmp_path_factory.mktemp("clips")
    generate(out, clips_per_class=1, cfg=SynthConfig(seed=4242), workers=1)
    return out


def right_then_left(seed: int = 7) -> np.ndarray:
    """`[128, 128, 128, 3]` frames (8.5 s at 15 fps): two clips moving right, then two moving
    left — what the demo model must label as two segments in that order."""
    from models.synth import render_clip

    rng = np.random.default_rng(seed)
    cfg = SynthConfig(frames=32)
    return np.concatenate([render_clip(0, reverse, cfg, rng) for reverse in (False, False, True, True)])


@pytest.fixture(scope="session")
def right_left_mp4(tmp_path_factory):
    from models.synth import write_mp4

    path = tmp_path_factory.mktemp("stream") / "right_left.mp4"
    write_mp4(path, right_then_left())
    return path


def faststart(src: Path, dst: Path) -> Path:
    """The same H.264 stream with its index first, so FFmpeg reads it over plain HTTP."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return dst
