# Every target builds its own .venv from this project's files: a fresh machine needs only python3, pip and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint demo bench clean

# pip -qq: errors only. A first `make demo` should show the demo, not pip's and setuptools'
# notes about the machine's indexes or editable installs (errors still stop make).
PIP    := $(BIN)/python -m pip install -qq

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e '.[dev]'
	touch $(STAMP)
	@echo "installed: . $(BIN)/activate puts bulk-cancel on your PATH"

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check bulk_cancel tests bench
	$(BIN)/ruff format --check bulk_cancel tests bench
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/python -m bulk_cancel.demo

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
