"""ONNX Runtime's fused CPU kernels for an exported model: a graph pass at load, not in the file.

The exported file stays standard ONNX (TensorRT parses it; OpenVINO reads it). For ONNX
Runtime on the CPU the backend rewrites, in memory, each attention the exporter decomposed
(`F.scaled_dot_product_attention`: q*s @ (k*s)^T [+ bias] -> Softmax -> @ v) into one
`com.microsoft.MultiHeadAttention` (ORT's fused CPU kernel; the merged models' log-size bias
`[B, 1, 1, N]` folded into one more channel of q and k, so that a merged block runs the kernel's
unbiased path and no `[B, 1, N, N]` bias is materialised), then lets ONNX Runtime's own
transformer optimizer fuse residual + LayerNorm (`SkipLayerNormalization`) and bias + GELU.
Any attention that does not match the pattern is left as it is. The backend holds the result
to the plain graph at load (`runtime.agreement`, the rewrite rule of its precision) and falls
back to it otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

DOMAIN = "com.microsoft"


def fuse(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(the model with fused kernels, the number of attentions fused). `proto` is not changed."""
    proto = _fuse_attention(_copy(proto))
    fused = sum(n.op_type == "MultiHeadAttention" for n in proto.graph.node)
    if fused:
        from onnxruntime.transformers import optimizer

        with _quiet():  # num_heads/hidden_size 0: read from the graph (attention is fused already)
            proto = optimizer.optimize_model(proto, model_type="vit", num_heads=0, hidden_size=0, opt_level=0).model
    return proto, fused


@contextlib.contextmanager
def _quiet():
    """The optimizer prints (stdout) and logs warnings (its modules' loggers, top-level names)
    when shape inference gives up on a merged graph, which only skips a fusion."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        root.setLevel(level)


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy


def _fuse_attention(proto: onnx.ModelProto) -> onnx.ModelProto:
    graph = proto.graph
    nodes = list(graph.node)
    producer = {out: n for n in nodes for out in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    constants |= {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in nodes if n.op_type == "Constant"}
    removed, added = set(), []
    for k, softmax in enumerate(n for n in nodes if n.op_type == "Softmax"):
        match = _attention(softmax, producer, consumers, constants)
        if match is None:
            continue
        (q, key, v, bias, heads, size, out), dropped = match
        removed |= {id(n) for n in dropped}
        bnhd = []
        for name in (q, key, v):  # (B, h, N, d) -> (B, N, h, d)
            added.append(helper.make_node("Transpose", [name], [f"{name}.bnhd{k}"], perm=[0, 2, 1, 3]))
            bnhd.append(f"{name}.bnhd{k}")
        attributes = {}
        if bias is not None:
            folded, bnhd[:2] = _fold_bias(graph, k, *bnhd[:2], bias, heads, size)
            added += folded
            attributes["scale"] = size**-0.5  # the head's own: the kernel would take the folded size's
        inputs = []
        for name in bnhd:  # (B, N, h, d) -> (B, N, h*d): the layout MultiHeadAttention takes
            added.append(helper.make_node("Reshape", [name, "fusion.bnc"], [f"{name}.bnc"]))
            inputs.append(f"{name}.bnc")
        added.append(
            helper.make_node(
                "MultiHeadAttention",
                inputs,
                [out],
                domain=DOMAIN,
                num_heads=heads,
                name=f"fusion.attention{k}",
                **attributes,
            )
        )
    if not added:
        return proto
    shared = (("fusion.bnc", [0, 0, -1]), ("fusion.bn11", [0, -1, 1, 1]), ("fusion.pad_last", [0, 0, 0, 0, 0, 0, 0, 1]))
    for name, value in shared:
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), "fusion.one_f"))
    del graph.node[:]
    graph.node.extend(_topological([n for n in nodes if id(n) not in removed] + added, graph))
    if not any(o.domain == DOMAIN for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return proto


def _fold_bias(graph: onnx.GraphProto, k: int, q: str, key: str, bias: str, heads: int, size: int):
    """(nodes, (q', k')): the per-key bias `[B, 1, 1, N]` folded into one more channel of q and k
    `(B, N, h, d)`: `scale * [q, 1] . [k, b / scale] = scale * q . k + b`, so that the kernel runs
    without an attention bias (which it takes only as `[B, 1, N, N]`, on a slower path)."""
    graph.initializer.extend([
        numpy_helper.from_array(np.array(size**0.5, np.float32), f"fusion.unscale{k}"),  # 1 / scale
        numpy_helper.from_array(np.array([1, 1, heads, 1], np.int64), f"fusion.heads{k}"),
    ])  # fmt: skip
    nodes = [
        helper.make_node("Pad", [q, "fusion.pad_last", "fusion.one_f"], [f"{q}.folded"]),  # (B, N, h, d+1)
        helper.make_node("Mul", [bias, f"fusion.unscale{k}"], [f"fusion.bias{k}"]),  # (B, 1, 1, N)
        helper.make_node("Reshape", [f"fusion.bias{k}", "fusion.bn11"], [f"fusion.column{k}"]),  # (B, N, 1, 1)
        helper.make_node("Expand", [f"fusion.column{k}", f"fusion.heads{k}"], [f"fusion.columns{k}"]),  # (B, N, h, 1)
        helper.make_node("Concat", [key, f"fusion.columns{k}"], [f"{key}.folded"], axis=3),  # (B, N, h, d+1)
    ]
    return nodes, (f"{q}.folded", f"{key}.folded")


def _attention(softmax, producer, consumers, constants):
    """The exporter's SDPA around `softmax`, or None: ((q, k, v, bias, heads, d, output), nodes
    replaced). q, k, v are `(B, h, N, d)`; output is the `(B, N, h*d)` the block reads."""
    scores = producer.get(softmax.input[0])
    bias = add = None
    if scores is not None and scores.op_type == "Add":
        add, bias, scores = scores, scores.input[1], producer.get(scores.input[0])
    if scores is None or scores.op_type != "MatMul":
        return None
    scale_q, scale_k = producer.get(scores.input[0]), producer.get(scores.input[1])
    if not (scale_q and scale_k and scale_q.op_type == scale_k.op_type == "Mul"):
        return None
    # k^T: Reshape(Transpose(Reshape(k))) — the exporter's transpose of the last two axes
    chain, name = [], scale_k.input[0]
    for op in ("Reshape", "Transpose", "Reshape"):
        node = producer.get(name)
        if node is None or node.op_type != op:
            return None
        chain.append(node)
        name = node.input[0]
    key = name
    after = consumers.get(softmax.output[0], [])
    if len(after) != 1 or after[0].op_type != "MatMul" or after[0].input[0] != softmax.output[0]:
        return None
    context = after[0]
    nxt = consumers.get(context.output[0], [])
    if len(nxt) != 1 or nxt[0].op_type != "Transpose":
        return None
    transpose = nxt[0]
    nxt = consumers.get(transpose.output[0], [])
    if len(nxt) != 1 or nxt[0].op_type != "Reshape" or list(_perm(transpose)) != [0, 2, 1, 3]:
        return None
    reshape = nxt[0]
    heads = _heads(scale_q.input[0], producer, constants)  # (heads, head size)
    if heads is None or any(len(consumers.get(n.output[0], [])) != 1 for n in (scale_q, scale_k, *chain[:2])):
        return None
    dropped = [scale_q, scale_k, *chain[:2], scores, softmax, context, transpose, reshape] + ([add] if add else [])
    if len(consumers.get(chain[2].output[0], [])) == 1:
        dropped.append(chain[2])
    return (scale_q.input[0], key, context.input[1], bias, *heads, reshape.output[0]), dropped


def _perm(node) -> list[int]:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), [])


def _heads(q: str, producer, constants) -> tuple[int, int] | None:
    """q = Squeeze(Slice(Transpose(Reshape(x, [B, N, 3, heads, d])))): (heads, d) from that shape."""
    node = producer.get(q)
    for op in ("Squeeze", "Slice", "Transpose", "Reshape"):
        if node is None or node.op_type != op:
            return None
        if op != "Reshape":
            node = producer.get(node.input[0])
    shape = constants.get(node.input[1])
    return (int(shape[3]), int(shape[4])) if shape is not None and len(shape) == 5 and shape[2] == 3 else None


def _topological(nodes: list[onnx.NodeProto], graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    ordered, pending = [], nodes
    while pending:
        waiting = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ValueError("attention fusion left a node without its inputs")
        pending = waiting
    return ordered
