"""The runtime: what an exported model is and how it runs, torch-free. Both `export` (to
validate what it writes) and the servers (the HTTP server, Triton's Python models) open
models through it.

- `runtime.metadata`: the artifact contract (`ModelMetadata`, in an ONNX file's properties or
  the JSON sidecar of a TensorRT engine) and the suffixes of what `sttm export` writes;
- `runtime.ladder_file`: a ladder of merge ratios on disk (`DIR/ladder.json`);
- `runtime.agreement`: the rule a runtime is held to against its reference;
- `runtime.backends`: ONNX Runtime, OpenVINO and TensorRT (PyTorch as a plugin) behind one
  `load_backend`; `read_metadata` reads a file's metadata without compiling it;
- `runtime.postprocess`: logits -> answers (softmax, views averaged, top-k);
- `runtime.segments`: a timeline's windows -> action segments (the smoothing rule).
"""

from runtime.backends import Backend, BackendOptions, ModelLoadError, load_backend, read_metadata

__all__ = ["Backend", "BackendOptions", "ModelLoadError", "load_backend", "read_metadata"]
