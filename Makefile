# portrait-queue: every target installs what it needs into $(VENV) first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WEIGHTS_DIR ?= ./weights
export WEIGHTS_DIR

.PHONY: install test lint weights bench-engine bench run

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,local]'
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

# The whole service in the foreground: PostgreSQL, Redis and S3 under ./var, the API and a worker.
run: $(STAMP)
	$(PY) -m api.localrun

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Official LivePortrait checkpoints from the HuggingFace hub, verified by sha256.
weights: $(STAMP)
	$(PY) -m worker.liveportrait.download --dest $(WEIGHTS_DIR)

# Per-stage timings of one edit with the kit's seed-0 weights (generated into .cache/ once).
bench-engine: $(STAMP)
	$(PY) bench/engine.py
