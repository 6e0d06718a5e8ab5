"""ONNX export: merging inside the graph, static token shapes, metadata, parity with PyTorch."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import onnx
import pytest
import torch

from export.onnx import FORBIDDEN_OPS, export_onnx, metadata_for
from export.validate import check_merge_index, open_onnx, validate
from models import load_model
from runtime.backends import read_metadata
from tests.torch_helpers import write_hf


def op_types(proto: onnx.ModelProto) -> set[str]:
    return {node.op_type for node in proto.graph.node}


def inferred_shapes(proto: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Every intermediate tensor's shape after (strict) ONNX shape inference; symbolic
    dims (the batch) appear by name."""
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims]
    return shapes


CASES = [(name, merge) for name in ("vit-tiny", "timesformer-tiny") for merge in ("none", "tome", "sttm")]

# TensorRT 10's ONNX parser (onnx-tensorrt docs/operators.md, 10.x): the operators that
# parse natively, without plugins. Scatter*/NonZero/Unique/Loop/If are left out on purpose:
# they are either data-dependent-shaped or branchy, and are forbidden in our graphs.
# fmt: off
TENSORRT_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "Cast", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "ConvTranspose", "Cos", "Cosh", "CumSum", "DepthToSpace", "DequantizeLinear", "Div", "Dropout", "Einsum", "Elu",
    "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu",
    "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample",
    "GroupNormalization", "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization", "IsInf", "IsNaN",
    "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "LpNormalization", "LpPool",
    "LRN", "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mod", "Mul", "Neg", "Not",
    "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu", "QuantizeLinear", "Range", "Reciprocal", "ReduceL1",
    "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "Round", "ScaledTanh", "Selu", "Shape", "Shrink", "Sigmoid",
    "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt",
    "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze",
    "Upsample", "Where", "Xor",
})
# fmt: on


def _constant_names(proto: onnx.ModelProto) -> set[str]:
    names = {init.name for init in proto.graph.initializer}
    return names | {out for node in proto.graph.node if node.op_type == "Constant" for out in node.output}


@pytest.mark.parametrize("name,merge", CASES)
def test_ort_matches_pytorch_at_batch_1_and_3(exported, name, merge):
    model, path = exported(name, merge)
    report = validate(model, open_onnx(path), "onnxruntime-cpu", batches=(1, 3))
    assert report.ok and report.max_abs_diff <= 1e-3
    assert [r.batch for r in report.rows] == [1, 3]
    if merge != "none":  # the merge decisions in the graph are PyTorch's, patch for patch
        assert check_merge_index(model, open_onnx(path)) == 6 * np.prod(model.config.grid)


@pytest.mark.parametrize("name,merge", CASES)
def test_graph_is_static_tensorrt_friendly_and_shrinks_tokens(exported, name, merge):
    model, path = exported(name, merge)
    proto = onnx.load(path)
    ops = op_types(proto)
    assert not ops & FORBIDDEN_OPS
    assert ops <= TENSORRT_OPS, f"ops TensorRT cannot parse: {sorted(ops - TENSORRT_OPS)}"
    constants = _constant_names(proto)
    for node in proto.graph.node:
        if node.op_type == "TopK":
            assert node.input[1] in constants, "TopK's K must be a constant (TensorRT)"
    assert (proto.opset_import[0].version if proto.opset_import[0].domain == "" else 18) >= 17
    # the token dimension visibly shrinks between layers in the inferred shapes
    shapes = {tuple(s) for s in inferred_shapes(proto).values()}
    cfg, dim = model.config, model.config.dim
    if cfg.arch == "vit":
        tokens = sorted({n for n, _ in model.schedule.tokens(cfg)} | {model.schedule.tokens(cfg)[-1][1]})
        for n in tokens:
            assert ("batch", n + (cfg.pool == "cls"), dim) in shapes
        assert (len(tokens) > 1) == (merge != "none")
    else:
        grids = {(t, p) for t_in, p_in, t, p in model.schedule.frames(cfg)} | {(cfg.num_frames, cfg.grid[1] ** 2)}
        for t, p in grids:
            assert ("batch", t, p, dim) in shapes
        assert (len(grids) > 1) == (merge != "none")
    inputs, outputs = proto.graph.input, proto.graph.output
    merges = ["merge_index"] if merge != "none" else []  # merged models: every patch's final token
    assert [i.name for i in inputs] == ["video"] and [o.name for o in outputs] == ["logits", *merges]
    assert inputs[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("name,merge", CASES[:3:2])
def test_metadata_round_trips(exported, name, merge):
    model, path = exported(name, merge)
    meta = read_metadata(path)
    assert meta == metadata_for(model, name)
    assert meta.labels == model.labels and meta.merge == merge and meta.gflops == pytest.approx(model.gflops(), 1e-3)
    props = {p.key: p.value for p in onnx.load(path).metadata_props}
    assert json.loads(props["sttm.input_spec"])["mean"] == list(model.preprocessing.mean)
    assert asdict(meta)["input_spec"]["frame_interval"] == model.preprocessing.frame_interval


def test_session_loads_without_warnings(exported, capfd):
    import onnxruntime as ort

    _, path = exported("vit-tiny", "sttm")
    capfd.readouterr()
    options = ort.SessionOptions()
    options.log_severity_level = 1  # info and above
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    err = capfd.readouterr().err
    assert "unsupported" not in err.lower() and " W:" not in err and "[W:" not in err


@pytest.mark.slow
@pytest.mark.parametrize("merge", ["tome", "sttm"])
def test_parity_at_realistic_token_counts(exported, merge):
    """1568 tokens and hundreds of merges: near-ties must not reorder tokens (canonical order)."""
    model, path = exported("vit-tiny", merge, 0.38, num_frames=16, image_size=224)
    assert model.config.num_tokens == 1568
    report = validate(model, open_onnx(path), "onnxruntime-cpu", batches=(1, 3))
    assert report.max_abs_diff <= 1e-3


def test_hf_videomae_export_matches_transformers(tmp_path):
    reference = write_hf(tmp_path / "hf", "videomae", num_frames=8, image_size=64, num_hidden_layers=3)
    model = load_model(tmp_path / "hf")
    export_onnx(model, tmp_path / "m.onnx", metadata_for(model, "hf"))
    video = torch.randn(3, 3, 8, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = reference(pixel_values=video.transpose(1, 2)).logits.numpy()
    got = open_onnx(tmp_path / "m.onnx")(video.numpy())
    assert np.abs(got - expected).max() <= 1e-4
    assert read_metadata(tmp_path / "m.onnx").labels == tuple(reference.config.id2label[i] for i in range(5))


def test_int8_export_quantises_weight_matmuls_only(tmp_path):
    from export.run import ExportError, ExportSpec, run_export

    result = run_export(
        ExportSpec("vit-tiny", tmp_path / "q.onnx", merge="sttm", reduction=0.38, precision="int8", quiet=True)
    )
    assert result.reports[0].ok and result.reports[0].tolerance == 1e-1
    proto = onnx.load(tmp_path / "q.onnx")
    meta = read_metadata(tmp_path / "q.onnx")
    assert meta.precision == "int8"
    assert meta.validated_diff == result.reports[0].max_abs_diff > 0  # what a rewrite of it may add to
    ops = [n.op_type for n in proto.graph.node]
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    merge_ops = {n.op_type for n in proto.graph.node if any(".merge'" in p.value for p in n.metadata_props)}
    assert merge_ops and not merge_ops & {"MatMulInteger", "DynamicQuantizeLinear"}  # decisions stay fp32
    assert "MatMul" in ops  # attention and merge matmuls of two activations stay fp32
    with pytest.raises(ExportError, match="int8"):
        ExportSpec("vit-tiny", tmp_path / "q.plan", fmt="tensorrt", precision="int8", quiet=True)  # refused as built


def test_fp16_export_keeps_merge_math_in_fp32(tmp_path):
    from export.run import ExportSpec, run_export

    spec = ExportSpec("vit-tiny", tmp_path / "half.onnx", merge="sttm", reduction=0.38, precision="fp16", quiet=True)
    result = run_export(spec)
    assert result.reports[0].ok and result.reports[0].tolerance == 5e-2
    proto = onnx.load(tmp_path / "half.onnx")
    assert read_metadata(tmp_path / "half.onnx").precision == "fp16"
    types = {init.data_type for init in proto.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types  # weights are half
    inferred = onnx.shape_inference.infer_shapes(proto)
    elem = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    topk_inputs = [elem.get(n.input[0]) for n in proto.graph.node if n.op_type == "TopK"]
    exact = (onnx.TensorProto.FLOAT, onnx.TensorProto.INT32)  # scores in fp32; token order in int32
    assert onnx.TensorProto.FLOAT in topk_inputs and all(t in exact for t in topk_inputs)  # decisions never fp16
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_weights_exact_in_half_precision_are_stored_as_half_losslessly(tmp_path, exported):
    _, full = exported("vit-tiny", "sttm")  # the same model with random fp32 weights
    model = load_model("vit-tiny", merge="sttm", reduction=0.38)
    with torch.no_grad():  # what `save_model(half=True)` ships: fp16-exact weights
        for p in model.parameters():
            p.copy_(p.half().float())
    export_onnx(model, tmp_path / "half.onnx", metadata_for(model, "tiny"))

    def halves(path):
        return sum(init.data_type == onnx.TensorProto.FLOAT16 for init in onnx.load(path).graph.initializer)

    assert halves(tmp_path / "half.onnx") > 0 and halves(full) == 0
    assert (tmp_path / "half.onnx").stat().st_size < 0.8 * full.stat().st_size
    report = validate(model, open_onnx(tmp_path / "half.onnx"), "onnxruntime-cpu")
    assert report.ok and report.max_abs_diff < 1e-4  # computation stays fp32


def test_validation_allows_top1_flips_only_at_near_ties():
    from runtime.agreement import ValidationError

    model = load_model("vit-tiny")
    reference = np.array([[1.0, 0.99, 0.0], [2.0, 0.0, 1.0]], np.float32)  # clip 0: margin 0.01
    nudged = reference + np.array([[-0.01, 0.01, 0.0], [0.0, 0.0, 0.0]], np.float32)  # flips clip 0 only
    report = validate(model, lambda v: nudged, "fake", "fp16", batches=(2,), clips=2, reference=lambda v: reference)
    assert report.ok and (report.rows[0].top1_match, report.rows[0].near_ties) == (1, 1)
    assert "(+1 near-tie)" in report.table()
    swapped = reference[:, [2, 1, 0]]  # clip 1 flips where the reference is sure (and diffs are large)
    with pytest.raises(ValidationError, match="FAIL"):
        validate(model, lambda v: swapped, "fake", "fp16", batches=(2,), clips=2, reference=lambda v: reference)


def test_a_failed_validation_leaves_no_output_file(tmp_path, monkeypatch):
    from export.run import ExportSpec, run_export
    from runtime import agreement
    from runtime.agreement import ValidationError

    monkeypatch.setitem(agreement.TOLERANCE, "fp32", -1.0)  # nothing can pass
    with pytest.raises(ValidationError):
        run_export(ExportSpec("vit-tiny", tmp_path / "m.onnx", quiet=True))
    assert list(tmp_path.iterdir()) == []


def test_the_folded_bias_exports_static_without_scatter_and_validates(tmp_path):
    """The proportional-attention bias as a q/k channel (`models.layers.fold_biases`, off by
    default) keeps the graph as the exporters need it — static token shapes, no forbidden op,
    TensorRT-parsable — and the exported file agrees with PyTorch, merge decisions included, on
    ONNX Runtime and on OpenVINO (the ONNX file, and the IR `sttm export --format openvino` writes)."""
    from export.ir import write_ir
    from models.layers import fold_biases
    from runtime import BackendOptions, load_backend
    from tests.torch_helpers import randomize

    model = fold_biases(randomize(load_model("vit-tiny", merge="sttm", reduction=0.38)))
    path = export_onnx(model, tmp_path / "folded.onnx", metadata_for(model, "folded"))
    ops = op_types(onnx.load(path))
    assert not ops & FORBIDDEN_OPS and ops <= TENSORRT_OPS
    backend = open_onnx(path)
    assert validate(model, backend, "onnxruntime-cpu", batches=(1, 3)).ok
    assert check_merge_index(model, backend) == 6 * np.prod(model.config.grid)
    for source in (path, write_ir(path, tmp_path / "folded.xml")):
        openvino = load_backend(source, BackendOptions("openvino", "fp32"))
        assert openvino.provider.startswith("openvino:") and openvino.precision == "fp32"
        assert validate(model, openvino, "openvino", batches=(1, 3)).ok
        assert check_merge_index(model, openvino) == 6 * np.prod(model.config.grid)
