# Two commands for a fresh machine: `make serve` (the main job) and `make test`.
# torch is pinned and installed first: the CPU build comes from local disk; a looser
# requirement would pull a multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0

.PHONY: serve test lint install bench demo paper-table

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[serve,cpu,export,dev]"
	touch $@

install: $(VENV)/.installed

# The main job: the HTTP service on 127.0.0.1:8000 with the bundled demo model.
serve: install
	$(BIN)/sttm serve

# Reproduce the demo model (data, training, export; resumable) and the paper table.
demo: install
	$(BIN)/python -m export.experiments demo

# make paper-table ARGS=--symmetric: every model trained with flips + time reversal.
paper-table: install
	$(BIN)/python -m export.experiments table $(ARGS)

lint: install
	$(BIN)/ruff check models export service tests
	$(BIN)/ruff format --check models export service tests

test: lint
	$(BIN)/pytest

bench: install
	$(BIN)/python -m models.bench
	$(BIN)/python -m export.bench
