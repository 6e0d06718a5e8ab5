"""The per-runtime table says what each runner ran on: the backend's own provider line (for
ONNX Runtime, whether its attention ran fused), and a ratio against its own unmerged model."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")


def test_the_table_times_each_runtime_and_says_what_it_ran_on(capsys):
    from benchmarks.backends import main

    runtimes = ["onnxruntime fp32", "onnxruntime fp32 plain graph"]
    main(["--model", "vit-tiny", "--merges", "none", "sttm", "--repeats", "1", "--runtimes", *runtimes])
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| none") or line.startswith("| sttm")]
    assert sorted((r[0].strip("| "), r[1]) for r in rows) == sorted(
        (merge, name) for merge in ("none", "sttm") for name in runtimes
    )
    assert all(float(r[3]) > 0 for r in rows)
    assert "# sttm: onnxruntime fp32 runs on onnxruntime:CPUExecutionProvider (fused attention x" in out
    assert "# sttm: onnxruntime fp32 plain graph runs on onnxruntime:CPUExecutionProvider\n" in out
