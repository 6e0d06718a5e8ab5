"""ONNX Runtime's fused attention, a graph pass at load: every attention our exporter writes
fuses (unmerged or merged, ViT and TimeSformer), the answers stay PyTorch's, the file itself is
not touched, and a fused graph that disagrees with the plain one is not served."""

from __future__ import annotations

import re

import onnx
import pytest

from runtime import agreement
from runtime.backends import BackendOptions, load_backend, read_metadata

pytest.importorskip("torch")  # the graphs are real exports


# vit-tiny STTM as initialised (what tests/export/test_ir.py exports too), the others random
# (tests/export/test_onnx.py's): the session's shared exports, so none is made twice
SHARED = {("vit-tiny", "sttm"): {"reduction": 0.3, "random": False}}


@pytest.fixture(scope="module")
def files(exported, tmp_path_factory):
    """`files(name, merge, precision="fp32") -> (model, path)`: a shared export, or its int8 as
    `sttm export --precision int8` quantises it (made once)."""
    from export.onnx import metadata_for, set_metadata, to_int8

    int8 = {}

    def get(name: str, merge: str, precision: str = "fp32"):
        model, fp32 = exported(name, merge, **SHARED.get((name, merge), {}))
        if precision == "fp32":
            return model, fp32
        if (name, merge) not in int8:
            proto = set_metadata(to_int8(onnx.load(fp32)), metadata_for(model, name, "int8"))
            path = tmp_path_factory.mktemp("fusion") / f"{name}-{merge}-int8.onnx"
            onnx.save_model(proto, path)
            int8[name, merge] = path
        return model, int8[name, merge]

    return get


@pytest.mark.parametrize("name,merge", [("vit-tiny", "none"), ("vit-tiny", "sttm"), ("timesformer-tiny", "tome")])
def test_every_attention_runs_fused_and_matches_pytorch(files, name, merge):
    from export.validate import validate

    model, path = files(name, merge)
    written = path.read_bytes()
    fused = load_backend(path, BackendOptions("onnxruntime"))
    attentions = sum(n.op_type == "Softmax" for n in onnx.load(path).graph.node)
    assert re.search(r"fused attention x(\d+)", fused.provider).group(1) == str(attentions)
    assert validate(model, fused.run, fused.provider, "fp32").ok  # within 1e-3 of PyTorch, same top-1
    assert path.read_bytes() == written  # the exported file stays standard ONNX (TensorRT, OpenVINO)
    plain = load_backend(path, BackendOptions("onnxruntime", fuse=False))
    assert plain.provider == "onnxruntime:CPUExecutionProvider"


def test_an_int8_graph_runs_fused_within_the_int8_gate(files):
    """int8 files requantise activations per call: the fused graph is held to the plain one at a
    tenth of int8's budget (not fp32's 1e-3, which whole quantisation steps exceed), and to
    PyTorch by the int8 gate."""
    from export.validate import validate

    model, path = files("vit-tiny", "sttm", "int8")
    fused = load_backend(path, BackendOptions("onnxruntime"))
    attentions = sum(n.op_type == "Softmax" for n in onnx.load(path).graph.node)
    assert fused.precision == "int8"
    assert re.search(r"fused attention x(\d+)", fused.provider).group(1) == str(attentions)
    assert validate(model, fused.run, fused.provider, "int8").ok


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_fused_graph_that_disagrees_is_not_served(files, monkeypatch, precision):
    model, path = files("vit-tiny", "sttm", precision)
    monkeypatch.setitem(agreement.REWRITE_TOLERANCE, precision, -1.0)  # nothing agrees now
    backend = load_backend(path, BackendOptions("onnxruntime"))
    assert backend.provider.endswith("unfused)")
    assert backend(agreement.moving_squares(backend.meta.input_spec, 1)).shape == (1, len(model.labels))


def test_a_file_that_records_its_distance_from_pytorch_gives_its_fused_graph_what_is_left(files, monkeypatch, tmp_path):
    """`sttm export` records each file's distance from PyTorch: the fused graph may add what is
    left of the gate (a file recording none gets the fixed rule, here made to refuse everything)."""
    from dataclasses import replace

    from export.onnx import write_metadata

    model, path = files("vit-tiny", "sttm", "int8")
    monkeypatch.setitem(agreement.REWRITE_TOLERANCE, "int8", -1.0)
    served = {}
    for recorded in (None, 0.05, 0.2):  # 0.2: past the gate, nothing left
        copy = tmp_path / f"{recorded}.onnx"
        copy.write_bytes(path.read_bytes())
        write_metadata(copy, replace(read_metadata(path), validated_diff=recorded))
        served[recorded] = load_backend(copy, BackendOptions("onnxruntime")).provider
    assert served[None].endswith("unfused)") and served[0.2].endswith("unfused)")
    assert re.search(r"fused attention x\d+\)$", served[0.05])


def test_the_merged_blocks_bias_is_folded_into_q_and_k_not_expanded_to_n_by_n(files):
    """ORT's CPU kernel runs attention with a bias [B, 1, N, N] on a slower path and needs the
    bias materialised per clip; folded (`scale * [q, 1] . [k, b / scale]`) every merged block
    takes q, k, v only, q and k one channel wider, with the head's own scale given."""
    from runtime.backends import fusion

    model, path = files("vit-tiny", "sttm")
    proto = onnx.load(path)
    producer = {out: n for n in proto.graph.node for out in n.output}
    biased = sum(producer[n.input[0]].op_type == "Add" for n in proto.graph.node if n.op_type == "Softmax")
    graph, count = fusion.fuse(proto)
    attentions = [n for n in graph.graph.node if n.op_type == "MultiHeadAttention"]
    assert len(attentions) == count and 0 < biased < count  # the blocks before the first merge: no bias
    assert all(len([i for i in n.input if i]) == 3 for n in attentions)  # no bias, no mask input
    scales = [a.f for n in attentions for a in n.attribute if a.name == "scale"]
    from models.layers import Attention

    attention = next(m for m in model.modules() if isinstance(m, Attention))
    head = attention.qkv.in_features // attention.heads
    assert len(scales) == biased and all(abs(f - head**-0.5) < 1e-7 for f in scales)


@pytest.mark.parametrize("breaks", ["at load", "when run"])
def test_a_fused_graph_that_onnx_runtime_cannot_load_or_run_leaves_the_plain_one_serving(files, monkeypatch, breaks):
    """The fusion is an optimisation: an ONNX Runtime that refuses the fused graph (an older
    one without a kernel feature, say) costs the speed, not the model."""
    from runtime.backends import fusion

    model, path = files("vit-tiny", "sttm")
    fuse = fusion.fuse

    def broken(proto):
        graph, count = fuse(proto)
        for node in graph.graph.node:
            if node.op_type == "MultiHeadAttention":
                if breaks == "at load":
                    node.op_type = "NoSuchAttention"  # no kernel: the session cannot be made
                else:
                    next(a for a in node.attribute if a.name == "num_heads").i = 5  # 5 does not divide the width
        return graph, count

    monkeypatch.setattr(fusion, "fuse", broken)
    backend = load_backend(path, BackendOptions("onnxruntime"))
    assert "(attention not fused: " in backend.provider
    assert backend(agreement.moving_squares(backend.meta.input_spec, 1)).shape == (1, len(model.labels))
