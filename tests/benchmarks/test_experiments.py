"""The paper-table helpers: the time-order metric and the plot."""

from __future__ import annotations

from benchmarks.experiments import LABELS, order_accuracy, plot


def test_order_accuracy_counts_only_twin_confusions():
    n = len(LABELS)
    confusion = [[0] * n for _ in range(n)]
    right, left, growing = LABELS.index("moving_right"), LABELS.index("moving_left"), LABELS.index("growing")
    confusion[right][right] = 8
    confusion[right][left] = 2  # direction of time wrong
    confusion[left][growing] = 5  # another kind of error: not counted
    assert order_accuracy({"confusion": confusion}, LABELS) == 0.8


def test_plot_writes_a_png(tmp_path):
    rows = [{"method": "none", "mode": "-", "gflops": 0.23, "top1": 0.9}]
    for method in ("tome", "sttm"):
        for mode in ("fine-tuned", "training-free"):
            rows += [{"method": method, "mode": mode, "gflops": g, "top1": 0.8} for g in (0.1, 0.15)]
    plot(rows, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
