# trading-bot-execution - the two commands of the quick start are `make run` and `make test`.
# Everything is installed into .venv from uv.lock; uv itself is bootstrapped into .tools if missing.

PYTHON ?= python3
# use the platform's certificate store (machines behind a TLS-inspecting proxy need it)
export UV_SYSTEM_CERTS ?= 1
export UV_NATIVE_TLS ?= 1
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
BIN := $(VENV)/bin
# the browser tests (tests/browser) drive Debian's chromium with Playwright (Playwright's own download is not used)
export CHROMIUM ?= /usr/bin/chromium

.PHONY: help setup browser run test lint format bench chaos clean

help:
	@echo "make run    - set up and start the whole service (paper mode, embedded NATS, synthetic market data)"
	@echo "make test   - set up and run the whole test suite (ruff + pytest)"
	@echo "make lint   - ruff check and format check"
	@echo "make bench  - benchmarks (tables in bench/results/)"
	@echo "make chaos  - kill -9 every part in turn under load on a 3-node cluster (CHAOS_SHORT=1: at most 3 min)"
	@echo "make format - ruff format and fix"
	@echo "make clean  - remove .venv, .tools and ./data"

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv>=0.9,<1"

$(BIN)/tbx: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

setup: $(BIN)/tbx

# Chromium for tests/browser: nothing to do when $(CHROMIUM) is there; else Debian's package, as root (CI).
# Only `make test` and `make bench` ask for it (the service itself needs no browser): without it they fail and say why.
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian chromium for tests/browser ..."; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else \
	    echo "tests/browser need Chromium at $(CHROMIUM): run 'sudo apt-get install -y chromium' or set CHROMIUM" >&2; \
	    exit 1; \
	  fi; \
	fi

run: setup
	$(BIN)/tbx run

test: setup browser lint
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup browser
	$(BIN)/python -m bench.harness $(BENCH_ARGS)

chaos: setup
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .tools data .pytest_cache .ruff_cache .hypothesis
