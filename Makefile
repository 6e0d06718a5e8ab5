# Two commands for a fresh machine: `make serve` (the main job) and `make test`.
# torch is pinned and installed first: the CPU build comes from local disk; a looser
# requirement would pull a multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
MODEL ?= videomae-b

.PHONY: serve test lint install bench

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[serve,export,dev]"
	touch $@

install: $(VENV)/.installed

# The service lands in a later issue; until then the main job describes a built-in model.
serve: install
	$(BIN)/sttm info $(MODEL) --merge sttm --reduction 0.38

lint: install
	$(BIN)/ruff check models export service tests
	$(BIN)/ruff format --check models export service tests

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python -m models.bench
