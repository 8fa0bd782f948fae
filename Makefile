# Everything a fresh machine needs comes from here: `make run`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck unit sysdeps bench mutation clean

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

# Mutation testing where a bug loses data (slow, so not part of `make test`): one module
# (or one function group) at a time on one core, each against the fast tests of its
# area (pyproject.toml [tool.mutmut]); scores and the equivalent survivors: tests/MUTATION.md.
MUTATE := "cas_store.recovery.*" "cas_store.fsck.*" "cas_store.walk.*" \
	"cas_store.objects.x_decompress*" "cas_store.objects.x_object_id*" \
	"cas_store.gc.x__sweep*" "cas_store.gc.x?Marker?*" "cas_store.gc.x_gc__*" \
	"cas_store.store.x?Store?_mutate__*" "cas_store.store.x?Store?_commit_recovery__*" \
	"cas_store.store.x?Store?_recover_one__*" "cas_store.backends.sqlite.x?SQLiteBackend?commit__*"

mutation: $(STAMP)
	for m in $(MUTATE); do nice -n 10 $(BIN)/mutmut run --max-children 1 "$$m" || exit 1; done
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) mutants .pytest_cache .mypy_cache .ruff_cache .hypothesis test-artifacts
