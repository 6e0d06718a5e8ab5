"""Shared by every test directory, so torch-free: the service tests also run in `.venv-serve`,
which has no torch. Torch helpers (random checkpoints) live in tests/torch_helpers.py,
imported only from tests/models and tests/export."""

import os
import signal

import pytest


@pytest.fixture(autouse=True)
def _environ_restored():
    """`sttm serve` hands its flags to the app as STTM_* variables: a CLI test must not leave
    them for the next test's Settings()."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _sigchld_restored():
    """A DataLoader with worker processes (training, `sttm eval`) installs torch's SIGCHLD
    handler in this process for good; every later child's exit then ran a Python handler on
    the main thread, and the suite died of SIGSEGV (si_code SI_KERNEL: the kernel could not set
    up the handler's frame) while a later test waited for its server to exit."""
    before = signal.getsignal(signal.SIGCHLD)
    yield
    if signal.getsignal(signal.SIGCHLD) is not before:
        signal.signal(signal.SIGCHLD, before)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """`exported(name, merge, reduction=0.38, random=True, **overrides) -> (model, onnx path)`:
    each export made once per run and shared by every test file and test process (pytest-xdist's
    workers have their base temp directories in one parent). torch is imported only when called."""
    from tests.torch_helpers import export_once

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "exports"
    root.mkdir(exist_ok=True)
    cache = {}

    def get(name: str, merge: str, reduction: float = 0.38, random: bool = True, **overrides):
        reduction = reduction if merge != "none" else 0.0
        key = (name, merge, reduction, random, tuple(sorted(overrides.items())))
        if key not in cache:
            cache[key] = export_once(root, name, merge, reduction, random, **overrides)
        return cache[key]

    return get
