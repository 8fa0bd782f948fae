# Everything a fresh machine needs comes from here: `make run`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit sysdeps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,langgraph,openai-agents]'
	touch $(STAMP)

# System packages the tests drive for real (a browser, a database server).
sysdeps:
	bash scripts/sysdeps.sh

run: $(STAMP)
	$(BIN)/cas-store serve

lint: $(STAMP)
	$(BIN)/ruff check cas_store tests bench
	$(BIN)/mypy cas_store

# One worker per core (pytest-xdist); each test owns its temp dirs, ports and servers.
unit: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --durations=20

test: $(STAMP) sysdeps lint unit

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis test-artifacts
