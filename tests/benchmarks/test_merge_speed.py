"""`benchmarks.merge_speed`, the script the GPU table comes from: it runs in a low precision and
several batches (here on the CPU, with the tiny preset) and prints one row per runner."""

from __future__ import annotations

import pytest

from benchmarks import merge_speed


def test_one_row_per_merge_and_batch_in_a_low_precision(capsys):
    merge_speed.main(["--model", "vit-tiny", "--dtype", "bf16", "--batches", "1", "2", "--repeats", "1"])
    rows = [
        line.split(" | ")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and "---" not in line
    ]
    table = {(r[0].strip("| "), r[2]): r for r in rows[1:]}
    assert set(table) == {(m, b) for m in ("none", "tome", "sttm") for b in ("1", "2")}
    assert all(table[("none", b)][-1].strip(" |") == "1.00x" for b in ("1", "2"))  # each batch against its own none
    assert float(table[("sttm", "1")][6].rstrip("x")) > 1.0  # fewer GFLOPs than unmerged


def test_cuda_without_a_gpu_is_one_clear_error(capsys):
    if merge_speed.torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as exit_:
        merge_speed.main(["--model", "vit-tiny", "--device", "cuda"])
    assert exit_.value.code == 2 and "no CUDA device" in capsys.readouterr().err
