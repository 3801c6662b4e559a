# Quick start: `make demo` (install, then the quick benchmark on the best device present) and
# `make test` (install with test tools, lint with ruff, then the tests). Both create .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tbd-installed
EXTRAS ?= all,dev

.PHONY: install demo test test-mxnet clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the package metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/tbd demo

test: install
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q

# MXNet 1.9.1 (the TBD paper's legacy framework) needs numpy<1.24, so it gets an environment of its
# own (made once, about a minute); then its tests: from this environment through --python
# (tests/envs/test_mxnet.py), and the registry-generated ones of the mxnet pairs inside it.
MXNET_ENV ?= .venv-mxnet
test-mxnet: install
	[ -x $(MXNET_ENV)/bin/python ] || $(BIN)/tbd env create mxnet --framework mxnet==1.9.1 --framework pytest --framework pytest-timeout --dir $(MXNET_ENV) --force
	TBD_MXNET_PYTHON=$(MXNET_ENV)/bin/python $(BIN)/python -m pytest -q tests/envs/test_mxnet.py
	$(MXNET_ENV)/bin/python -m pytest -q tests/workloads/test_registry_workloads.py -k mxnet

clean:
	rm -rf $(VENV) $(MXNET_ENV) build *.egg-info src/*.egg-info
