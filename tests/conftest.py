"""Shared by every test directory, so torch-free: the service tests also run in `.venv-serve`,
which has no torch. Torch helpers (random checkpoints) live in tests/torch_helpers.py,
imported only from tests/models and tests/export."""

import os

import pytest


@pytest.fixture(autouse=True)
def _environ_restored():
    """`sttm serve` hands its flags to the app as STTM_* variables: a CLI test must not leave
    them for the next test's Settings()."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
