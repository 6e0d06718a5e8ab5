"""The import contracts in pyproject.toml ([tool.importlinter], run by `make lint`) bite: on a
copy of the product packages, one added import breaks the contract it should, naming the
import; the unmodified copy keeps every contract."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")  # it needs Python 3.11+: tomllib is there too

import tomllib  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "export", "models", "media", "benchmarks")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = {contract["id"]: contract["name"] for contract in CONFIG["contracts"]}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """service, export, models, media (and benchmarks where present) + pyproject.toml, no data."""
    if not LINT_IMPORTS.is_file():
        pytest.skip(f"no lint-imports next to {sys.executable}")
    copy = tmp_path_factory.mktemp("tree")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "demo", "*.onnx", "*.safetensors", "*.json", "*.mp4")
    for name in PACKAGES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, copy / name, ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", copy)
    return copy


def lint_imports(tree: Path, *contracts: str) -> subprocess.CompletedProcess:
    """`lint-imports` in `tree`; PYTHONPATH makes grimp read the copy, not the editable install."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    args = [str(LINT_IMPORTS), "--no-cache", "--no-logo", *(f"--contract={c}" for c in contracts)]
    return subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, timeout=60)


def test_the_product_keeps_every_contract(pristine):
    run = lint_imports(pristine)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in run.stdout, run.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "chain"),
    [
        ("service/batcher.py", "import torch", "no-torch", "service.batcher -> torch"),
        ("media/sampling.py", "import torch", "no-torch", "media.sampling -> torch"),
        # indirectly: export.onnx imports torch
        ("service/batcher.py", "import export.onnx", "no-torch", "service.batcher -> export.onnx"),
        ("models/config.py", "from service import app", "layers", "models.config -> service.app"),
        ("media/sampling.py", "import models.config", "layers", "media.sampling -> models.config"),
        ("service/app.py", "import benchmarks", "no-benchmarks", "service.app -> benchmarks"),
        ("service/client/__init__.py", "import service.app", "client-not-server", "service.client -> service.app"),
        ("service/batcher.py", "import service.client", "server-not-client", "service.batcher -> service.client"),
    ],
)
def test_one_import_breaks_its_contract(pristine, tmp_path, module, line, contract, chain):
    tree = tmp_path / "tree"
    shutil.copytree(pristine, tree)
    path = tree / module
    assert path.is_file(), f"{module} is gone: pick another module for this check"
    path.write_text(path.read_text() + f"\n{line}  # added by tests/test_layers.py\n")
    run = lint_imports(tree, contract)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{CONTRACTS[contract]} BROKEN" in run.stdout and chain in run.stdout, run.stdout + run.stderr


def test_a_new_serving_module_is_covered_too(pristine, tmp_path):
    """The torch contract names `service` as a whole: a module added later is held to it."""
    tree = tmp_path / "tree"
    shutil.copytree(pristine, tree)
    (tree / "service" / "brand_new.py").write_text("import torch\n")
    run = lint_imports(tree, "no-torch")
    assert run.returncode == 1 and "service.brand_new -> torch" in run.stdout, run.stdout + run.stderr
