"""`sttm triton REPO`: the Triton Inference Server of the `nvidia-pytriton` wheel, set up to
serve a repository from `sttm export --format triton`, in the foreground.

The wheel carries `tritonserver`, its libraries and the Python backend, with one backend stub
per Python version. What the server needs, and gets here:
- a backend directory holding the Python backend *and* the stub built for this Python (a copy,
  made once per wheel version x Python under the user's cache directory);
- the wheel's libraries and this Python's `libpython` on `LD_LIBRARY_PATH`;
- this project and this environment's packages on `PYTHONPATH` (the repository's `model.py`
  files put it on `sys.path`: Triton's embedded interpreter does not read it itself).
The process then *becomes* `tritonserver` (exec), so SIGTERM/SIGINT reach Triton directly:
it stops taking requests, finishes those in flight (up to 30 s) and unloads the models.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "nvidia-pytriton"
PROJECT_ROOT = Path(__file__).resolve().parents[1]  # holds tritonserve/, runtime/, media/, ...


@dataclass(frozen=True)
class Ports:
    http: int = 8100
    grpc: int = 8101
    metrics: int = 8102


def wheel_dir() -> Path:
    """`.../site-packages/pytriton/tritonserver`; OSError (one line) when the wheel is missing."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise OSError(f"the '{PACKAGE}' package is not installed (pip install {PACKAGE}; Linux x86_64/arm64 only)")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise OSError(f"{root} has no bin/tritonserver: reinstall {PACKAGE}")
    return root


def backend_dir(wheel: Path, cache: Path, wheel_version: str) -> Path:
    """A backend directory with the Python backend and this Python's stub (built once per
    wheel version x Python, under `cache`)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    target = cache / f"{wheel_version}-py{version}" / "backends"
    if (target / "python" / stub.name).is_file():
        return target
    if not stub.is_file():
        raise OSError(f"{PACKAGE} has no Python backend stub for Python {version}")
    staging = target.with_name(f"backends.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(wheel / "backends", staging, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, staging / "python" / stub.name)
    try:
        staging.rename(target)  # atomic: a concurrent first start keeps the other's copy
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "python" / stub.name).is_file():
            raise OSError(f"cannot prepare Triton's backend directory {target}") from None
    return target


def environment(wheel: Path, base: dict[str, str]) -> dict[str, str]:
    """`base` plus the library path and PYTHONPATH the server and its stubs need."""
    libs = [str(wheel.parents[1] / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
    paths = [str(PROJECT_ROOT), sysconfig.get_path("purelib"), sysconfig.get_path("platlib")]
    env = dict(base)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [*libs, base.get("LD_LIBRARY_PATH", "")] if p)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in [*paths, base.get("PYTHONPATH", "")] if p))
    return env


def command(wheel: Path, backends: Path, repo: Path, ports: Ports, host: str, extra: list[str]) -> list[str]:
    return [
        str(wheel / "bin" / "tritonserver"),
        f"--model-repository={repo}",
        f"--backend-directory={backends}",
        f"--cache-directory={wheel / 'caches'}",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        f"--http-address={host}",
        f"--grpc-address={host}",
        f"--metrics-address={host}",
        "--strict-readiness=true",
        *extra,
    ]


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sttm-serve" / "triton"


def prepare(
    repo: str | Path, ports: Ports = Ports(), host: str = "127.0.0.1", extra: list[str] = ()
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that serve `repo`; OSError (one line) when it cannot."""
    repo = Path(repo).resolve()
    if not repo.is_dir():
        raise OSError(f"model repository {repo} is not a directory (sttm export MODEL --format triton -o REPO)")
    if not any(repo.glob("*/config.pbtxt")):  # Triton would start, find no model and fail after its tables
        raise OSError(
            f"{repo} is not a model repository: no MODEL/config.pbtxt (sttm export MODEL --format triton -o REPO)"
        )
    wheel = wheel_dir()
    backends = backend_dir(wheel, cache_root(), importlib.metadata.version(PACKAGE))
    argv = command(wheel, backends, repo, ports, host, list(extra))
    return argv, environment(wheel, os.environ)


def become(argv: list[str], env: dict[str, str]) -> None:
    """Replace this process with `argv` (what `prepare` made): signals then reach Triton."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)
