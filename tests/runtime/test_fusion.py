"""ONNX Runtime's fused attention, a graph pass at load: every attention our exporter writes
fuses (unmerged or merged, ViT and TimeSformer), the answers stay PyTorch's, the file itself is
not touched, and a fused graph that disagrees with the plain one is not served."""

from __future__ import annotations

import re

import onnx
import pytest

from runtime import agreement
from runtime.backends import BackendOptions, load_backend

pytest.importorskip("torch")  # the graphs are real exports


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`exported(name, merge) -> (model, path)`, each exported once."""
    from export.onnx import export_onnx, metadata_for, to_int8
    from models import load_model

    cache = {}

    def get(name: str, merge: str, precision: str = "fp32"):
        if (name, merge, precision) not in cache:
            path = tmp_path_factory.mktemp("fusion") / f"{name}-{merge}-{precision}.onnx"
            if precision == "int8":  # the fp32 export quantised as `sttm export --precision int8` does
                model, fp32 = get(name, merge)
                proto = to_int8(onnx.load(fp32))
                del proto.metadata_props[:]
                for key, value in metadata_for(model, name, "int8").to_props().items():
                    proto.metadata_props.add(key=key, value=value)
                onnx.save_model(proto, path)
            else:
                model = load_model(name, merge=merge, reduction=0.3 if merge != "none" else 0.0)
                export_onnx(model, path, metadata_for(model, name))
            cache[name, merge, precision] = model, path
        return cache[name, merge, precision]

    return get


@pytest.mark.parametrize("name,merge", [("vit-tiny", "none"), ("vit-tiny", "sttm"), ("timesformer-tiny", "tome")])
def test_every_attention_runs_fused_and_matches_pytorch(exported, name, merge):
    from export.validate import validate

    model, path = exported(name, merge)
    written = path.read_bytes()
    fused = load_backend(path, BackendOptions("onnxruntime"))
    attentions = sum(n.op_type == "Softmax" for n in onnx.load(path).graph.node)
    assert re.search(r"fused attention x(\d+)", fused.provider).group(1) == str(attentions)
    assert validate(model, fused.run, fused.provider, "fp32").ok  # within 1e-3 of PyTorch, same top-1
    assert path.read_bytes() == written  # the exported file stays standard ONNX (TensorRT, OpenVINO)
    plain = load_backend(path, BackendOptions("onnxruntime", fuse=False))
    assert plain.provider == "onnxruntime:CPUExecutionProvider"


def test_an_int8_graph_runs_fused_within_the_int8_gate(exported):
    """int8 files requantise activations per call: the fused graph is held to the plain one at a
    tenth of int8's budget (not fp32's 1e-3, which whole quantisation steps exceed), and to
    PyTorch by the int8 gate."""
    from export.validate import validate

    model, path = exported("vit-tiny", "sttm", "int8")
    fused = load_backend(path, BackendOptions("onnxruntime"))
    attentions = sum(n.op_type == "Softmax" for n in onnx.load(path).graph.node)
    assert fused.precision == "int8"
    assert re.search(r"fused attention x(\d+)", fused.provider).group(1) == str(attentions)
    assert validate(model, fused.run, fused.provider, "int8").ok


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_fused_graph_that_disagrees_is_not_served(exported, monkeypatch, precision):
    model, path = exported("vit-tiny", "sttm", precision)
    monkeypatch.setitem(agreement.REWRITE_TOLERANCE, precision, -1.0)  # nothing agrees now
    backend = load_backend(path, BackendOptions("onnxruntime"))
    assert backend.provider.endswith("unfused)")
    assert backend(agreement.moving_squares(backend.meta.input_spec, 1)).shape == (1, len(model.labels))


def test_the_merged_blocks_bias_is_folded_into_q_and_k_not_expanded_to_n_by_n(exported):
    """ORT's CPU kernel runs attention with a bias [B, 1, N, N] on a slower path and needs the
    bias materialised per clip; folded (`scale * [q, 1] . [k, b / scale]`) every merged block
    takes q, k, v only, q and k one channel wider, with the head's own scale given."""
    from runtime.backends import fusion

    model, path = exported("vit-tiny", "sttm")
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
def test_a_fused_graph_that_onnx_runtime_cannot_load_or_run_leaves_the_plain_one_serving(exported, monkeypatch, breaks):
    """The fusion is an optimisation: an ONNX Runtime that refuses the fused graph (an older
    one without a kernel feature, say) costs the speed, not the model."""
    from runtime.backends import fusion

    model, path = exported("vit-tiny", "sttm")
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
