# The two commands: `make run` and `make test`. Everything else is a helper of theirs.
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint format sync clean bench bench-quick

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	@touch $@

sync: $(VENV)/.synced

run: sync
	$(BIN)/imprint serve

lint: sync
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: sync
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

test: lint
	$(BIN)/pytest --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

# Benchmarks (not part of `make test`): see bench/README.md. cfssl: apt-get install golang-cfssl
bench: sync
	$(BIN)/python -m bench

bench-quick: sync
	BENCH_QUICK=1 $(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .coverage
