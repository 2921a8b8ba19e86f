# portrait-queue: every target installs what it needs into $(VENV) first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WEIGHTS_DIR ?= ./weights
export WEIGHTS_DIR

.PHONY: install test lint weights bench-engine bench run browser chaos soak

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,local]'
	@touch $(STAMP)

install: $(STAMP) browser

# Debian's chromium for the playground's browser test (Playwright drives /usr/bin/chromium; it
# never downloads a browser). Installed only where missing and apt is there; as root or via sudo.
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing chromium (apt-get) for tests/api/test_playground.py"; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	    >/dev/null || echo "chromium could not be installed (tests/api/test_playground.py needs it)"; \
	fi

test: $(STAMP) browser
	$(PY) -m pytest

# The whole service in the foreground: PostgreSQL, Redis and S3 under ./var, the API and a worker.
run: $(STAMP)
	$(PY) -m stack.localrun

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Official LivePortrait checkpoints from the HuggingFace hub, verified by sha256.
weights: $(STAMP)
	$(PY) -m worker.liveportrait.download --dest $(WEIGHTS_DIR)

# Per-stage timings of one edit with the kit's seed-0 weights (generated into .cache/ once).
bench-engine: $(STAMP)
	$(PY) bench/engine.py

# The fault tests (tests/faults) with CHAOS_SCALE times the requests and faults (default 5): worker
# kills, broker and database restarts, timeouts, cancellations, hostile input. Prints a line per
# fault and, last, one JSON line: submitted, completed, lost, duplicated, p99_recovery_s, ...
CHAOS_SCALE ?= 5
chaos: $(STAMP)
	@mkdir -p var && rm -f var/chaos.jsonl
	@CHAOS_SCALE=$(CHAOS_SCALE) CHAOS_REPORT=$(CURDIR)/var/chaos.jsonl $(PY) -m pytest tests/faults -q; \
	  status=$$?; $(PY) -m tests.faults.chaos_report var/chaos.jsonl; exit $$status

# The whole service on this machine: API throughput, queue overhead, edits/s with 1, 2, 4 workers.
# Writes bench/results.json. BENCH_ARGS="--engine tiny" for a quick run.
bench: $(STAMP)
	$(PY) bench/service.py $(BENCH_ARGS)

# A benchmark, not a test: submit, status, result and /metrics latency on an empty table and at
# SOAK_ROWS finished requests of one key (default 1,000,000), then each retention sweep's rate on
# a backlog. Prints a table and, last, one JSON line. SOAK_ARGS for more (bench/soak.py --help).
SOAK_ROWS ?= 1000000
export SOAK_ROWS
soak: $(STAMP)
	$(PY) bench/soak.py $(SOAK_ARGS)
