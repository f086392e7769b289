# The README's two commands: `make serve` installs and starts the proxy on the embedded
# default; `make test` installs the test tools and runs the whole suite on both backends.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LINTED := aivonx config tests migrations benchmarks wsgi.py gunicorn.conf.py

.PHONY: serve test lint test-sqlite test-postgres bench soak clean

$(VENV)/.runtime-installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: $(VENV)/.runtime-installed requirements-dev.txt
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

serve: $(VENV)/.runtime-installed
	$(BIN)/flask --app aivonx init
	exec $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check $(LINTED)
	$(BIN)/hadolint Dockerfile

# SQLite + in-memory state, then PostgreSQL + Redis (the servers on this machine).
test-sqlite: $(VENV)/.dev-installed
	AIVONX_TEST_BACKEND=sqlite $(BIN)/pytest

test-postgres: $(VENV)/.dev-installed
	AIVONX_TEST_BACKEND=postgres $(BIN)/pytest

test: lint test-sqlite test-postgres

# Benchmarks: aivonx against direct and nginx (README, Performance). BENCH_ARGS=--quick for a smoke run.
bench: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# Minutes of load with random node kills; not part of `make test`. E.g.
# make soak SOAK_ARGS="--duration 120 --redis redis://127.0.0.1:6379/0"
soak: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
