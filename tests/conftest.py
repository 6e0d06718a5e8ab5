"""Shared by every test directory, so torch-free: the service tests also run in `.venv-serve`,
which has no torch. Torch helpers (random checkpoints) live in tests/torch_helpers.py,
imported only from tests/models and tests/export."""
