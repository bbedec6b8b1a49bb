# Two entry points for a fresh machine:
#   make run    set up .venv and run the demo: a simulated server losing status writes, the sidecar catching them
#   make test   set up .venv (+ system tools the tests drive) and run the whole suite
# For a real server: make sidecar (monitor run with ./config.yaml), see README.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: run sidecar test lint bench setup system-deps clean

$(BIN)/monitor: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/monitor

system-deps:
	scripts/install-system-deps

run: setup
	$(BIN)/python -m demo

sidecar: setup
	$(BIN)/monitor run --config config.yaml

lint: setup
	$(BIN)/ruff check .

test: setup system-deps lint
	$(BIN)/pytest -q

bench: setup system-deps
	$(BIN)/python bench/scan_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
