# Two commands for a fresh machine: `make serve` (the main job) and `make test`.
# torch is pinned and installed first: the CPU build comes from local disk; a looser
# requirement would pull a multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
# pip installs torch (pip's configuration on our machines points at its CPU build on local disk);
# uv installs everything else, resolving as pip does (the same versions) and faster (the three
# environments on a fresh clone: 174 s vs 441 s by pip, 2 cores). torch is named to uv too, so uv keeps the installed one or stops: it never pulls
# another build. `$(call uv,VENV_BIN)` installs into that environment (uv would otherwise pick ./.venv),
# compiled to bytecode as pip does: our machines set PYTHONDONTWRITEBYTECODE, and without .pyc files
# every process compiles what it imports (`import ray`: 7.5 s, against 2.4 s compiled).
uv = $(1)/pip install -q uv && $(1)/uv pip install -q --compile-bytecode --python $(1)/python
# The server's own environment, as the serving image has it: no torch. `make test` runs the
# service tests there too, so an import of torch on the serving path fails CI.
SERVE_VENV := .venv-serve
SERVE_BIN := $(SERVE_VENV)/bin
# Triton's Python-backend stub (nvidia-pytriton) needs numpy < 2, so `sttm triton` runs from its
# own environment: the serving extras + nvidia-pytriton. tests/triton start Triton from there.
TRITON_VENV := .venv-triton
TRITON_BIN := $(TRITON_VENV)/bin
SOURCES := cli label models export ptruntime service tritonserve runtime media benchmarks tests

.PHONY: serve test lint install install-serve install-triton system-packages bench demo paper-table docs

$(BIN)/activate:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q $(TORCH)
	$(call uv,$(BIN)) -e ".[serve,cpu,export,label,dev]" "$(TORCH)"
	touch $@

install: $(VENV)/.installed

$(SERVE_BIN)/activate:
	$(PY) -m venv $(SERVE_VENV)

$(SERVE_VENV)/.installed: pyproject.toml | $(SERVE_BIN)/activate
	$(call uv,$(SERVE_BIN)) -e ".[serve,cpu,test]"
	touch $@

install-serve: $(SERVE_VENV)/.installed

$(TRITON_BIN)/activate:
	$(PY) -m venv $(TRITON_VENV)

$(TRITON_VENV)/.installed: pyproject.toml | $(TRITON_BIN)/activate
	$(call uv,$(TRITON_BIN)) -e ".[serve,cpu,triton]"
	touch $@

install-triton: $(TRITON_VENV)/.installed

# The main job: the HTTP service on 127.0.0.1:8000 with the bundled demo model.
serve: install
	$(BIN)/sttm serve

# Reproduce the demo model (data, training, export; resumable) and the paper table.
demo: install
	$(BIN)/python -m benchmarks.experiments demo

# make paper-table ARGS=--symmetric: every model trained with flips + time reversal.
paper-table: install
	$(BIN)/python -m benchmarks.experiments table $(ARGS)

lint: install
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/lint-imports --no-logo

# The system programs the tests drive (chromium, GStreamer's RTSP server): installed when
# missing, or one line naming the command, before anything else runs.
system-packages:
	scripts/system-packages

# Everything but the HTTP server's tests in the full environment; the server's tests (torch-free)
# in the serving environment only, with the other torch-free packages' tests again there.
# The full environment's tests run in two processes, a file each (pytest-xdist): the dynamo
# exporter traces on one core, and exports are most of that run (13.6 vs ~18 min serial here).
test: system-packages lint install-serve install-triton
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -d site
	$(BIN)/pytest --ignore=tests/service -n 2 --dist loadfile --durations=15
	$(SERVE_BIN)/python -c "import importlib.util, sys; sys.exit('$(SERVE_VENV) has torch; serving must not need it' if importlib.util.find_spec('torch') else 0)"
	$(SERVE_BIN)/pytest tests/service tests/media tests/runtime tests/tritonserve tests/cli --durations=10
	# Above AVX2 (AVX-512, AMX): the precision tests again with OpenVINO held to AVX2 by oneDNN's
	# ONEDNN_MAX_CPU_ISA (runtime.backends.cpu follows it), so the AVX2-only paths run everywhere;
	# only the backends' and CPU decisions' tests and the IR's (ONNX Runtime ignores the variable: the rest would repeat)
	if grep -qwE 'avx512f|amx_tile' /proc/cpuinfo; then ONEDNN_MAX_CPU_ISA=AVX2 $(BIN)/pytest tests/runtime/test_backends.py tests/runtime/test_cpu.py tests/export/test_ir.py; fi

# The docs site (docs/, mkdocs.yml) on http://127.0.0.1:8001/; `make test` builds it with --strict
# (not -q: quiet mode drops the warnings that --strict counts, and a broken site would pass).
# (NO_MKDOCS_2_WARNING: silences Material's end-of-life banner.)
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8001

bench: install
	$(BIN)/python -m benchmarks.merge_speed
	$(BIN)/python -m benchmarks.export_speed
