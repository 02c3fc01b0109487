# The README's two commands: `make demo` (set up, serve, sweep, report) and `make test` (set up, run pytest).
# Every setup step is idempotent and skips in seconds when already done.
SHELL := /bin/bash
PY := .venv/bin/python
VLAB := .venv/bin/vlab

.PHONY: setup client-env server-env model system-packages demo test test-fast test-under-load lint bench-crosscheck \
	experiment-prefix experiment-kv experiment-engines clean

setup: system-packages
	@$(MAKE) --no-print-directory -j2 client-env server-env
	@$(MAKE) --no-print-directory model

client-env:
	@scripts/setup-client-env.sh

server-env:
	@scripts/setup-server-env.sh

model: server-env
	@scripts/prepare-model.sh

# Debian packages: tcmalloc (faster CPU vLLM) and chromium (browser tests). Installed only when missing and root.
system-packages:
	@scripts/setup-system-packages.sh

demo: setup
	@$(VLAB) demo

test: setup
	@$(PY) -m pytest $(PYTEST_ARGS)

# `make test` three times in a row with a CPU hog on one core (RUNS=N for another count); logs in test-artifacts/.
test-under-load: setup
	@scripts/test-under-load.sh $(or $(RUNS),3)

test-fast: client-env
	@$(PY) -m pytest -m "not e2e and not browser" $(PYTEST_ARGS)

lint: client-env
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/lint-imports
	@.venv/bin/mypy

# Ready experiments (each starts and stops its own servers, then writes one comparison report).
experiment-prefix: setup
	@$(VLAB) experiment prefix

experiment-kv: setup
	@$(VLAB) experiment kv

experiment-engines: setup
	@$(VLAB) experiment engines

bench-crosscheck: setup
	@$(PY) bench/crosscheck_vllm_bench.py

clean:
	rm -rf .venv .venv-server .cache
