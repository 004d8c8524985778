# Everything a fresh machine needs, from a clean clone:
#   make run     the service: `hpt serve` with embedded workers on SQLite (hpt.db)
#   make test    the whole test suite (installs what it needs, then ruff and pytest, in parallel)
# Both create .venv and install the project into it first.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Installed before the project, so the project's torch range is already met: an unpinned torch
# would pull GBs of CUDA packages. pip finds the CPU wheel through the machine's pip config.
TORCH := torch==2.13.0
INSTALLED := $(VENV)/.installed
# Extra arguments, e.g. `make run ARGS="--port 9000 --workers 2"`, `make test ARGS="-k compose"`.
ARGS ?=

.PHONY: help install run dashboard test lint bench clean test-system-deps postgres-up

help:
	@echo "make run        start the API with embedded workers on SQLite (http://127.0.0.1:8000/docs)"
	@echo "make dashboard  start optuna-dashboard on the same database (http://127.0.0.1:8080)"
	@echo "make test       install what the tests need, then ruff and the whole pytest suite"
	@echo "make lint       ruff and hadolint"
	@echo "make bench      run every benchmark in bench/"
	@echo "make .env       a .env for docker compose, with random secrets"
	@echo "make clean      remove .venv, caches and build output (keeps hpt.db)"
	@echo "ARGS=... passes arguments on: make run ARGS=\"--port 9000\""

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when pyproject.toml changes.
$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(TORCH)
	$(BIN)/pip install -e '.[dev]'
	touch $@

install: $(INSTALLED)

run: $(INSTALLED)
	$(BIN)/hpt serve $(ARGS)

dashboard: $(INSTALLED)
	$(BIN)/hpt dashboard $(ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile

# One pytest process per core this process may run on (xdist's "logical"; the environment
# variable PYTEST_XDIST_AUTO_NUM_WORKERS overrides it): more only share the same cores.
test: $(INSTALLED) test-system-deps postgres-up
	$(BIN)/ruff check .
	$(BIN)/pytest --numprocesses=logical --maxschedchunk=1 $(ARGS)

bench: $(INSTALLED)
	@set -e; for script in bench/*.py; do \
	    [ -e "$$script" ] || { echo "no benchmarks in bench/"; break; }; \
	    case "$$script" in bench/_*) continue;; esac; \
	    echo "== $$script"; $(BIN)/python "$$script"; \
	done

# What the tests use from the system: Chromium (dashboard page test) and a compose binary that
# validates docker-compose.yml with no Docker engine (Debian's docker-compose).
test-system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 \
	    || missing="$$missing docker-compose"; \
	[ -z "$$missing" ] && exit 0; \
	sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	if command -v apt-get >/dev/null \
	    && $$sudo apt-get update -qq \
	    && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; then \
	    exit 0; \
	fi; \
	echo "could not install$$missing: the tests that need it are skipped (they fail under CI=true)"; \
	[ "$${CI:-}" != true ]

# Starts the machine's PostgreSQL cluster when it is installed but down; a no-op elsewhere.
postgres-up:
	@if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ] \
	    && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
	    pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start \
	        || echo "PostgreSQL did not start: the postgres tests are skipped (they fail under CI=true)"; \
	fi

# Secrets for docker compose: a .env from .env.example with random values (never overwritten).
.env: | .env.example
	@sed -e "s/^POSTGRES_PASSWORD=$$/POSTGRES_PASSWORD=$$($(PYTHON) -c 'import secrets; print(secrets.token_hex(24))')/" \
	    -e "s/^HPT_API_KEY=$$/HPT_API_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))')/" \
	    .env.example > $@
	@echo "wrote $@ (keep it secret; the API key is HPT_API_KEY in it)"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache test-artifacts
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
