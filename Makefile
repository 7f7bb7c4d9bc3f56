# The two commands: `make run` and `make test`. Everything else is a helper of theirs.
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast coverage lint format sync clean bench bench-quick

# Python keeps the bytecode it compiles (__pycache__, ignored by git) even where the
# environment says not to: every test starts imprint processes, and each would compile
# the whole stack again.
unexport PYTHONDONTWRITEBYTECODE

# pytest-xdist workers for `make test` and `make test-fast`; TEST_WORKERS=0 runs in one
# process. --dist loadfile keeps a module's tests on one worker (see tests/conftest.py).
TEST_WORKERS ?= auto
XDIST = -n $(TEST_WORKERS) --dist loadfile

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
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: sync
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

test: lint
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

# The whole suite again with branch coverage and its report. Tracing every line costs
# about a third more time, so `make test` leaves it to this target.
coverage: sync
	$(BIN)/pytest $(XDIST) --cov --cov-report=term:skip-covered $(PYTEST_ARGS)

# A quick check while working, not for CI (which runs `make test`): no lint, no server of
# the machine's (PostgreSQL, Mosquitto, chromium), no tests/e2e (real imprint processes)
# and no test marked slow; the unit tests and the integration tests on the in-process
# HTTPS server and SQLite.
FAST_TESTS = -m "not postgres and not browser and not mosquitto and not slow" tests/unit tests/integration
test-fast: sync
	$(BIN)/pytest $(XDIST) $(FAST_TESTS) $(PYTEST_ARGS)

# Benchmarks (not part of `make test`): see bench/README.md. cfssl: apt-get install golang-cfssl
bench: sync
	$(BIN)/python -m bench

bench-quick: sync
	BENCH_QUICK=1 $(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .coverage
