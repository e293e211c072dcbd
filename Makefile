# Two commands a fresh clone needs: `make repro` and `make test`. Both set up .venv first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Same thread counts everywhere: CPU results are bitwise repeatable only at a fixed count.
export OMP_NUM_THREADS ?= 2
export MKL_NUM_THREADS ?= 2
export PYTHONHASHSEED := 0
# DVC stages call `sdcaff ...`: the venv's scripts come first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup repro test test-slow bench gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest -q

# Issue #7's bad-input, interruption and determinism cases, with a per-category table of totals.
.PHONY: reliability
reliability: setup
	$(BIN)/python -m pytest -m reliability -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

bench: setup
	$(BIN)/python -m pytest benchmarks -q -m 'not slow'

# On a machine with a GPU (~8 min on one H100/H200): GPU tests, timing suites with compile and bf16,
# and units per GPU at k = 1, 2, 4, 8 (docs/cluster.md). Fails at once without a CUDA device.
gpu-check: setup
	benchmarks/gpu_check.sh

clean:
	rm -rf artifacts .pytest_cache
