"""Triton's side of the project, apart from the HTTP server: `sttm triton`'s launcher
(`tritonserve.launch`: the nvidia-pytriton wheel's server, set up and exec'd) and the
Python-backend models a repository from `sttm export --format triton` names
(`tritonserve.python_models`). Uses media and the runtime only (no torch, models or export).
Not named `triton`: that would shadow Triton-lang, which `torch.compile` imports."""
