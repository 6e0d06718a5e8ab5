"""Checkpoint -> one self-contained ONNX file with the merging inside the graph.

The spec is data (names, dynamic axes, opset); the exported file carries the model's
metadata (labels, preprocessing, merge, GFLOPs) so a server needs nothing else.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from export.errors import ExportError
from models import VideoClassifier
from ptruntime.artifact import metadata_for as artifact_metadata
from runtime.metadata import PREFIX, ModelMetadata

SCOPES = "pkg.torch.onnx.name_scopes"  # a node's metadata: the modules the dynamo exporter traced it in
# Ops that would break static shapes or TensorRT-without-plugins; never in our graphs.
FORBIDDEN_OPS = frozenset({"ScatterElements", "ScatterND", "Scatter", "NonZero", "Unique", "Loop", "If"})


@dataclass(frozen=True)
class OnnxSpec:
    input_name: str = "video"
    output_name: str = "logits"
    merge_output: str = "merge_index"  # merged models only: what the merges did (models.explain)
    opset: int = 18  # the dynamo exporter's lowest; TensorRT 10 parses it
    max_batch: int = 64  # upper bound of the dynamic batch axis


def metadata_for(model: VideoClassifier, name: str, precision: str = "fp32", spec: OnnxSpec = OnnxSpec()):
    """The file's metadata (`ptruntime.artifact.metadata_for`) with the graph's names from `spec`."""
    return artifact_metadata(model, name, precision, spec.input_name, spec.output_name, spec.merge_output)


def example_input(model: VideoClassifier, batch: int = 2) -> torch.Tensor:
    cfg = model.config
    return torch.zeros(batch, 3, cfg.num_frames, cfg.image_size, cfg.image_size)


def export_onnx(model: VideoClassifier, path: str | Path, metadata: ModelMetadata, spec: OnnxSpec = OnnxSpec()) -> Path:
    """Trace `model` with the dynamo exporter (dynamic batch only) and write one `.onnx`.
    When `metadata.merge_output` names one, the graph has a second output: every patch's
    final token (`models.explain.WithMergeIndex`), which clients that do not ask ignore.

    Checks: `onnx.checker` (full), shape inference, and that no forbidden op slipped in.
    """
    from models.explain import WithMergeIndex

    path = Path(path)
    traced = WithMergeIndex(model) if metadata.merge_output else model
    outputs = [spec.output_name] + ([metadata.merge_output] if metadata.merge_output else [])
    batch = torch.export.Dim("batch", min=1, max=spec.max_batch)
    for logger in ("torch.onnx", "onnxscript"):  # their INFO/WARNING chatter is not ours to show
        logging.getLogger(logger).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                traced.eval(),
                (example_input(model),),
                dynamo=True,
                opset_version=spec.opset,
                external_data=False,
                input_names=[spec.input_name],
                output_names=outputs,
                dynamic_shapes={"video": {0: batch}},
                optimize=True,  # constant folding and dead-code removal (onnxscript optimizer)
                verbose=False,
            )
    except Exception as err:  # noqa: BLE001 - the exporter raises many types
        raise ExportError(f"torch.onnx.export failed: {str(err).splitlines()[0][:300]}") from err
    proto = program.model_proto
    set_metadata(proto, metadata)
    proto.doc_string = f"sttm-serve export of {metadata.name} ({metadata.arch}, merge {metadata.merge})"
    check_graph(proto)
    if metadata.precision == "fp16":
        proto = to_fp16(proto)
    elif metadata.precision == "int8":
        proto = to_int8(proto)
    else:
        proto = store_exact_halves(proto)
    onnx.save_model(proto, path)
    return path


def set_metadata(proto: onnx.ModelProto, metadata: ModelMetadata) -> onnx.ModelProto:
    """`proto` with its `sttm.*` metadata replaced by `metadata`'s; the graph and any other
    metadata stay as they are."""
    others = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(PREFIX)]
    del proto.metadata_props[:]
    for key, value in [*others, *metadata.to_props().items()]:
        proto.metadata_props.add(key=key, value=value)
    return proto


def write_metadata(path: str | Path, metadata: ModelMetadata) -> None:
    """`set_metadata` on the ONNX file at `path`."""
    onnx.save_model(set_metadata(onnx.load(str(path)), metadata), str(path))


def merger_nodes(proto: onnx.ModelProto) -> list[str]:
    """Names of the nodes the dynamo exporter traced inside a merger module (their scope ends
    in `.merge`): the merge decisions (similarities, density peaks, TopK, the one-hot merge,
    the log-size bias) that every lowered precision keeps in fp32 — the fp16 and int8 graphs
    here, OpenVINO's int8 quantiser in `export.ir`. Runtimes that convert the graph keep the
    names (OpenVINO: as its nodes' friendly names)."""
    return module_nodes(proto, "merge")


def module_nodes(proto: onnx.ModelProto, *modules: str) -> list[str]:
    """Names of the nodes traced inside a module whose attribute name is one of `modules`
    (e.g. `merge` for `model.blocks.3.merge`, `head` for `model.head`)."""
    ends = tuple(f".{module}'" for module in modules)  # the scopes are a list's repr: "['', 'model', 'model.head']"
    inside = (
        n
        for n in proto.graph.node
        if any(p.key == SCOPES and any(e in p.value for e in ends) for p in n.metadata_props)
    )
    return [n.name for n in inside]


def store_exact_halves(proto: onnx.ModelProto, min_size: int = 1024) -> onnx.ModelProto:
    """Lossless size reduction: a float32 weight whose every value is exactly representable
    in float16 (e.g. a checkpoint shipped in half precision) is stored as float16 and Cast
    back to float32 by a node at the top of the graph, which runtimes fold at load time.
    Computation stays float32 and the outputs are bit-identical."""
    graph = proto.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or np.prod(init.dims) < min_size:
            continue
        value = numpy_helper.to_array(init)
        half = value.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), value):
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(half, f"{name}.f16"))
        casts.append(
            onnx.helper.make_node("Cast", [f"{name}.f16"], [name], to=onnx.TensorProto.FLOAT, name=f"{name}.to_f32")
        )
    nodes = casts + list(graph.node)  # topological order: the casts read initializers only
    del graph.node[:]
    graph.node.extend(nodes)
    return proto


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Half-precision weights and matmuls for TensorRT >= 11 (precision lives in the
    graph) and GPU runtimes. LayerNorm, Softmax and every merge decision (similarities,
    density peaks, TopK, the one-hot merge) stay fp32: fp16 flips near-ties. Input and
    output stay fp32."""
    from onnxconverter_common import float16

    # and every Cast to float: the converter retypes a Cast's output but not its `to` (the
    # integer merge statistics' sizes are cast to float in the blocks and the head)
    casts = (n for n in proto.graph.node if n.op_type == "Cast")
    to_float = [n.name for n in casts if any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)]
    keep = merger_nodes(proto) + to_float
    ops = float16.DEFAULT_OP_BLOCK_LIST + ["LayerNormalization", "Softmax"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "number truncated" notices for clamped constants
        half = float16.convert_float_to_float16(proto, keep_io_types=True, op_block_list=ops, node_block_list=keep)
    check_graph(half)
    return half


def to_int8(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Dynamic int8 quantisation for CPUs (ONNX Runtime): the weight matmuls get 7-bit
    per-channel weights (`reduce_range`: exact on every x86-64 CPU, see `runtime.backends.cpu`)
    and per-call quantised activations (MatMulInteger). Matmuls of two
    activations (attention, similarities, the one-hot merge) and every node of a merger stay
    fp32, so merge decisions are made at full precision. Not for TensorRT (no MatMulInteger)."""
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep = merger_nodes(proto)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" notice goes to the root logger
    try:
        with tempfile.TemporaryDirectory() as scratch:
            out = Path(scratch) / "int8.onnx"
            quantize_dynamic(
                proto,
                out,
                op_types_to_quantize=["MatMul"],
                per_channel=True,
                reduce_range=True,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=keep,
                extra_options={"MatMulConstBOnly": True},
            )
            quantised = onnx.load(out)
    finally:
        root.setLevel(level)
    check_graph(quantised)
    return quantised


def check_graph(proto: onnx.ModelProto) -> None:
    """Full checker, shape inference, and the no-forbidden-ops rule."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"onnx.checker rejected the graph: {str(err).splitlines()[0]}") from err
    bad = sorted({node.op_type for node in proto.graph.node} & FORBIDDEN_OPS)
    if bad:
        raise ExportError(f"graph contains ops that break static shapes / TensorRT: {bad}")
