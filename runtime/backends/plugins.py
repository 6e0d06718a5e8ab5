"""Backends found as plugins: packages above `models` that the torch-free runtime cannot import.

A plugin is an entry point of the group `GROUP` (`sttm.backends`, declared in a package's
`pyproject.toml`) naming an object with two functions:
- `load(source, options) -> Backend`: open `source` (a path or a name, as given) and run it;
- `check(source, options) -> None`: raise `ModelLoadError` (one line) where `load` would refuse
  what `options` ask, without loading weights (`sttm serve` says it before the server starts).

The PyTorch backend (`ptruntime`, entry point `torch`) is the one there is: it needs `models`
to build a checkpoint, so the runtime finds it by name at run time (`importlib.metadata`),
never by an import statement, and the import contracts keep the runtime torch-free. Each
plugin names the module it needs (`NEEDS`): where that is not installed (the serving image
has no torch) the plugin is not loaded at all and the error names what to install.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import entry_points
from pathlib import Path

GROUP = "sttm.backends"
# what each plugin imports, and how to get it: checked with find_spec, which imports nothing
NEEDS = {"torch": ("torch", "pip install torch==2.13.0 (the CPU wheel; a CUDA build on GPUs), then pip install -e .")}
# files the NVIDIA kernel driver creates: a GPU is there (asked before anything imports torch)
NVIDIA_DRIVER = (Path("/proc/driver/nvidia/version"), Path("/dev/nvidiactl"))


class PluginMissingError(RuntimeError):
    """A plugin backend cannot be used here; the message says what to install, in one line."""


def missing_reason(name: str) -> str | None:
    """Why the plugin `name` cannot load here (one line), or None where it can."""
    module, install = NEEDS.get(name, (None, ""))
    if module is not None and importlib.util.find_spec(module) is None:
        return f"--backend {name} needs {module}, which this environment lacks ({install})"
    if not any(ep.name == name for ep in entry_points(group=GROUP)):
        return f"--backend {name}: no plugin of that name in {GROUP} (pip install -e . registers the built-in ones)"
    return None


def plugin(name: str):
    """The plugin object registered as `name`; `PluginMissingError` (what to install) where it cannot load."""
    if (reason := missing_reason(name)) is not None:
        raise PluginMissingError(reason)
    (found,) = [ep for ep in entry_points(group=GROUP) if ep.name == name][:1]
    return found.load()


def nvidia_gpu_present(driver_files: tuple[Path, ...] = NVIDIA_DRIVER) -> bool:
    """An NVIDIA driver is loaded on this machine (without importing torch or CUDA)."""
    return any(path.exists() for path in driver_files)
