# pgconductor: `make demo` and `make test` set up everything they need on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PG_CONFIG ?= pg_config
# Installing extension files needs write access to Postgres's share directory.
SUDO := $(shell [ "$$(id -u)" = 0 ] || [ -w "$$($(PG_CONFIG) --sharedir 2>/dev/null)/extension" ] || echo sudo)

.PHONY: setup venv postgres install test installcheck pytest lint format demo bench clean

setup: venv install

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

venv: $(BIN)/.installed

postgres:
	scripts/ensure_postgres.sh

# Build extension/pgconductor--X.Y.Z.sql from extension/sql/*.sql and install it (PGXS).
install: postgres
	$(MAKE) -C extension
	$(SUDO) $(MAKE) -C extension install

# SQL-level tests of the extension alone (pg_regress).
installcheck: install
	$(MAKE) -C extension installcheck || { cat tests/sql/results/regression.diffs tests/sql/results/isolation/regression.diffs 2>/dev/null; exit 1; }

pytest: setup
	$(BIN)/pytest

lint: venv
	$(BIN)/ruff check python tests bench examples
	$(BIN)/ruff format --check python tests bench examples
	$(BIN)/mypy

format: venv
	$(BIN)/ruff check --fix python tests bench examples
	$(BIN)/ruff format python tests bench examples

# Everything CI checks: SQL tests, Python tests, lint and types.
test: setup
	$(MAKE) installcheck
	$(BIN)/pytest
	$(MAKE) lint

demo: setup
	$(BIN)/python examples/demo.py

bench: setup
	$(BIN)/python bench/bench.py

clean:
	$(MAKE) -C extension clean
	rm -rf $(VENV) tests/sql/results
