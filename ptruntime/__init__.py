"""PyTorch as a serving runtime (`--backend torch`): a plugin of the runtime layer.

It sits above `models` (it builds checkpoints and model names with them) and below the
commands; `runtime` finds it through the entry point `sttm.backends: torch` (pyproject.toml)
and never imports it, so the runtime and the servers stay torch-free.

- `ptruntime.artifact`: what `sttm export --format torch` writes (a `torch.export` program,
  `.pt2`, with the model's metadata inside) and reads back; a model's metadata;
- `ptruntime.aoti`: what `sttm export --format aoti` writes (an AOTInductor package, compiled for one
  device kind and precision, with the target it was compiled for and the logits it must reproduce);
- `ptruntime.device`: which device and precision (CUDA fp16/bf16, CPU fp32 / bf16 on bf16 units);
- `ptruntime.graphs`: CUDA graphs, one per batch size, a batch padded to the next captured size;
- `ptruntime.backend`: `load(source, options) -> runtime.Backend` and `check` (the plugin).
"""
