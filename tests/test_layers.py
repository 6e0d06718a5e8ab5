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
PACKAGES = ("cli", "label", "service", "tritonserve", "export", "ptruntime", "models", "runtime", "media", "benchmarks")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
CONTRACTS = {contract["id"]: contract["name"] for contract in CONFIG["contracts"]}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """The product packages (and benchmarks where present) + pyproject.toml, no data."""
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


def test_the_contracts_allow_no_exceptions():
    assert not [c["id"] for c in CONFIG["contracts"] if c.get("ignore_imports")]


def test_the_product_keeps_every_contract(pristine):
    run = lint_imports(pristine)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in run.stdout, run.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "chain"),
    [
        ("service/batcher.py", "import torch", "no-torch", "service.batcher -> torch"),
        ("media/sampling.py", "import torch", "no-torch", "media.sampling -> torch"),
        ("runtime/agreement.py", "import torch", "no-torch", "runtime.agreement -> torch"),
        ("tritonserve/python_models.py", "import torch", "no-torch", "tritonserve.python_models -> torch"),
        # indirectly: export.onnx imports torch
        ("service/batcher.py", "import export.onnx", "no-torch", "service.batcher -> export.onnx"),
        # the servers run exported models: no checkpoints, no export
        ("service/classify.py", "import models.config", "servers", "service.classify -> models.config"),
        ("tritonserve/python_models.py", "import models.info", "servers", "tritonserve.python_models -> models.info"),
        ("service/app.py", "import export.triton", "layers", "service.app -> export.triton"),
        ("tritonserve/launch.py", "import service.settings", "layers", "tritonserve.launch -> service.settings"),
        # the runtime sits under export and beside models
        ("runtime/metadata.py", "import export.onnx", "layers", "runtime.metadata -> export.onnx"),
        ("runtime/metadata.py", "import models.config", "layers", "runtime.metadata -> models.config"),
        ("models/config.py", "import runtime.metadata", "layers", "models.config -> runtime.metadata"),
        ("models/config.py", "from service import app", "layers", "models.config -> service.app"),
        ("media/sampling.py", "import models.config", "layers", "media.sampling -> models.config"),
        # the PyTorch backend is a plugin: found by its entry point, imported by nothing below it
        ("runtime/backends/__init__.py", "import ptruntime.backend", "layers", "runtime.backends -> ptruntime.backend"),
        ("service/classify.py", "import ptruntime.device", "servers", "service.classify -> ptruntime.device"),
        ("models/vit.py", "import ptruntime.artifact", "layers", "models.vit -> ptruntime.artifact"),
        ("ptruntime/backend.py", "import export.run", "layers", "ptruntime.backend -> export.run"),
        # the command sits above all
        ("export/run.py", "import cli.main", "layers", "export.run -> cli.main"),
        ("service/batcher.py", "import cli.loadtest", "layers", "service.batcher -> cli.loadtest"),
        ("service/app.py", "import benchmarks", "no-benchmarks", "service.app -> benchmarks"),
        ("cli/loadtest.py", "import service.app", "client-not-server", "cli.loadtest -> service.app"),
        ("cli/loadtest.py", "import runtime.backends", "client-not-server", "cli.loadtest -> runtime.backends"),
        # the labelling job runs exported models beside the servers: no torch, no server, no checkpoints
        ("label/job.py", "import torch", "no-torch", "label.job -> torch"),
        ("label/job.py", "import service.settings", "layers", "label.job -> service.settings"),
        ("label/engine.py", "import models.config", "servers", "label.engine -> models.config"),
        ("runtime/settings.py", "import label.job", "layers", "runtime.settings -> label.job"),
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


@pytest.mark.parametrize("package", ["service", "tritonserve", "runtime"])
def test_a_new_serving_module_is_covered_too(pristine, tmp_path, package):
    """The torch contract names each package as a whole: a module added later is held to it."""
    tree = tmp_path / "tree"
    shutil.copytree(pristine, tree)
    (tree / package / "brand_new.py").write_text("import torch\n")
    run = lint_imports(tree, "no-torch")
    assert run.returncode == 1 and f"{package}.brand_new -> torch" in run.stdout, run.stdout + run.stderr
