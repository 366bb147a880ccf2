# Fresh machine: `make demo` or `make test`. Both create/refresh .venv, install the project, then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU build by default; GPU users: make install TORCH="torch==2.13.0 --index-url <your CUDA index>"
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
export MALLOC_MMAP_THRESHOLD_ ?= 1073741824
export MALLOC_TRIM_THRESHOLD_ ?= 1073741824

.PHONY: install demo test lint format clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev,play]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python train.py experiment=genie_coinrun_tiny logger=default

test: install lint
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) outputs multirun
