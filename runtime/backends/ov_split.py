"""Graph surgery for exact merge decisions: a model cut in two compiled parts, every node a
merge decision (a TopK: nearest neighbours, density peaks, matches) depends on in fp32, the
rest in a low precision, run back to back (OpenVINO's CPU plugin takes no per-node precision
from Python)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino

from runtime.backends.ov_compile import compiled


def decisions_in_fp32(model, precision: str, threads: int, cache: Path | None = None):
    """The model as two compiled parts, `video -> [outputs]`: every node that a merge
    decision (TopK) depends on, in fp32; the rest in `precision`, fed the tensors it reads
    from the first part. None when the model makes no decisions (nothing merges). `model`
    is not changed: the parts are cut from two copies of it."""
    exact_part, rest = model.clone(), model.clone()
    twins = dict(zip((op.get_name() for op in rest.get_ordered_ops()), exact_part.get_ordered_ops()))
    decisions = [op for op in rest.get_ordered_ops() if op.get_type_name() == "TopK"]
    if not decisions:
        return None
    exact = _ancestors(decisions)
    crossing: dict[tuple[str, int], list] = {}  # (node, port) in the exact part -> inputs in the rest
    for op in rest.get_ordered_ops():
        if op.get_name() in exact:
            continue
        for port in op.inputs():
            source = port.get_source_output()
            node = source.get_node()
            if node.get_name() in exact and node.get_type_name() not in ("Constant", "Parameter"):
                crossing.setdefault((node.get_name(), source.get_index()), []).append(port)
    cuts = []
    for ports in crossing.values():
        source = ports[0].get_source_output()
        cut = openvino.op.Parameter(source.get_element_type(), source.get_partial_shape())
        for port in ports:
            port.replace_source_output(cut.output(0))
        cuts.append(cut)
    first = openvino.Model([twins[name].output(i) for name, i in crossing], exact_part.get_parameters(), "decisions")
    second = openvino.Model(rest.get_results(), [*rest.get_parameters(), *cuts], "rest")
    run_first, run_second = compiled(first, "fp32", threads, cache), compiled(second, precision, threads, cache)

    def infer(video: np.ndarray) -> list[np.ndarray]:
        return run_second(video, *run_first(video))

    return infer


def _ancestors(nodes: list) -> set[str]:
    """The names of `nodes` and of every node they depend on."""
    seen, stack = {n.get_name() for n in nodes}, list(nodes)
    while stack:
        for port in stack.pop().inputs():
            node = port.get_source_output().get_node()
            if node.get_name() not in seen:
                seen.add(node.get_name())
                stack.append(node)
    return seen
