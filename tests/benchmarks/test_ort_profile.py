"""The ORT profile's arithmetic: multiply-adds per kernel from the shapes ORT records, and on
the bundled demo model the profiled graph's matmuls and attentions add up to its GMACs."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.ort_profile import macs, profile_file, table

DEMO = Path(__file__).parents[2] / "models" / "demo" / "demo.onnx"


def _event(op: str, inputs: list[list[int]], outputs: list[list[int]]) -> dict:
    return {
        "args": {
            "op_name": op,
            "input_type_shape": [{"float": shape} for shape in inputs],
            "output_type_shape": [{"float": shape} for shape in outputs],
        }
    }


def test_multiply_adds_of_matmuls_and_fused_attention_and_none_for_the_rest():
    qkv = _event("DynamicQuantizeMatMul", [[1, 1568, 768], [2304]], [[1, 1568, 2304]])
    assert macs(qkv) == 1568 * 768 * 2304
    batched = _event("MatMul", [[2, 12, 196, 64], [2, 12, 64, 196]], [[2, 12, 196, 196]])
    assert macs(batched) == 2 * 12 * 196 * 196 * 64
    # a merged block folded: q and k one channel wider per head (12 x 65), v as it is; 1176 tokens
    folded = _event("MultiHeadAttention", [[2, 1176, 780], [2, 1176, 780], [2, 1176, 768]], [[2, 1176, 768]])
    assert macs(folded) == 2 * 1176 * 1176 * (780 + 768)
    assert macs(_event("Gelu", [[1, 1568, 3072]], [[1, 1568, 3072]])) == 0


def test_the_demo_models_profile_adds_up_to_its_multiply_adds():
    pytest.importorskip("torch")
    from models import load_model

    result = profile_file(DEMO, runs=2, threads=1)
    assert result["served"] == f"fused attention x{len(result['by_attention'])}" and result["by_attention"]
    counted = sum(row["gmacs"] for row in result["by_op"].values())
    expected = load_model("demo").gflops()  # schedule's count, merge steps included
    assert counted == pytest.approx(expected, rel=0.05)
    assert sum(row["share"] for row in result["by_op"].values()) == pytest.approx(1.0, abs=0.01)
    assert "MultiHeadAttention" in table(result, top=50)


def test_it_profiles_the_plain_graph_where_the_backends_check_refuses_the_fused_one(monkeypatch):
    from runtime.backends import ort

    monkeypatch.setattr(ort, "rewrite_tolerance", lambda *_: -1.0)  # no fused graph can pass: the backend serves plain
    result = profile_file(DEMO, runs=1, threads=1)
    assert result["served"].startswith("fused attention differs by") and result["served"].endswith("unfused")
    assert not result["by_attention"] and "MultiHeadAttention" not in result["by_op"]
    assert result["by_op"]["MatMul"]["gmacs"] > 0  # attention as the exporter wrote it: plain matmuls
    assert profile_file(DEMO, runs=1, threads=1, fuse=False)["served"] == "attention not fused"


def test_what_it_cannot_profile_is_one_line_and_exit_2(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    from benchmarks.ort_profile import main

    foreign = tmp_path / "relu.onnx"  # an ONNX file without our metadata
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in "xy")
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])), foreign)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    cases = (
        (tmp_path / "model.xml", "not an .onnx file"),
        (foreign, "was it written by `sttm export`"),
        (broken, "cannot load"),
    )
    for path, says in cases:
        with pytest.raises(SystemExit) as exit_:
            main([str(path)])
        assert exit_.value.code == 2 and says in capsys.readouterr().err.strip().splitlines()[-1]
