"""CUDA graphs, one per batch size: a batch is padded to the next captured size and replayed.

A captured graph replays every kernel of a forward with one launch, which is what a small
batch on a large GPU is bound by (the README's GPU table: compile + CUDA graphs 502 clips/s at
batch 1 against 153 eager). Shapes are static per graph, which the merged models are by
construction (`models.merge`: constant-K TopK, one-hot matmuls, no data-dependent shapes).
Clips are independent in these models, so zero rows padding a batch change no real row.

Captured sizes: the powers of two below `max_batch`, and `max_batch` (graphs share one memory
pool, captured largest first). A batch above `max_batch` runs eagerly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch

Forward = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
WARMUP_RUNS = 2  # on a side stream before capture (cuBLAS / cuDNN choose their kernels there)


def capture_sizes(max_batch: int) -> tuple[int, ...]:
    """`8 -> (1, 2, 4, 8)`, `6 -> (1, 2, 4, 6)`: the batch sizes a graph is captured for."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, not {max_batch}")
    sizes = [1 << i for i in range(max_batch.bit_length()) if 1 << i < max_batch]
    return (*sizes, max_batch)


def padded_size(batch: int, sizes: Sequence[int]) -> int | None:
    """The smallest captured size that holds `batch` clips; None above the largest (run eagerly)."""
    return min((s for s in sizes if s >= batch), default=None)


class BatchGraphs:
    """`forward` captured once per size in `sizes` on the current CUDA device; call it like `forward`.

    Args:
        forward: `[B, 3, T, S, S]` -> a tuple of outputs, each `[B, ...]`.
        clip_shape: `(3, T, S, S)`; dtype: the input's (the model's precision).
    """

    def __init__(self, forward: Forward, clip_shape: tuple[int, ...], dtype: torch.dtype, sizes: Sequence[int]):
        self.forward, self.sizes = forward, tuple(sorted(sizes))
        self.lock = threading.Lock()  # one replay at a time: the static buffers are shared
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, ...]]] = {}
        pool = torch.cuda.graph_pool_handle()
        for size in reversed(self.sizes):
            static_in = torch.zeros(size, *clip_shape, dtype=dtype, device="cuda")
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    forward(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                static_out = forward(static_in)
            self.graphs[size] = (graph, static_in, static_out)

    def __call__(self, video: torch.Tensor) -> tuple[torch.Tensor, ...]:
        batch = video.shape[0]
        size = padded_size(batch, self.sizes)
        if size is None:
            return self.forward(video)
        graph, static_in, static_out = self.graphs[size]
        with self.lock:
            static_in[:batch].copy_(video)
            static_in[batch:].zero_()
            graph.replay()
            return tuple(out[:batch].clone() for out in static_out)  # the buffers are overwritten by the next replay
