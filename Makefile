# Two commands matter: `make demo` and `make test`. Both set up .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tierflow-installed
# torch and torchvision go in first, pinned as a matched pair: an unpinned torch
# makes pip fetch a multi-GB build instead of the one on local disk.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test check lint format bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/tierflow demo

test: setup
	$(BIN)/python -m pytest -n 2 -q

check: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

bench: setup
	$(BIN)/tierflow bench-plan --out reports/bench

clean:
	rm -rf $(VENV) reports .pytest_cache .mypy_cache .ruff_cache
