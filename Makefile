# Quick start: `make demo` (install, then the quick benchmark on the best device present) and
# `make test` (install with test tools, lint with ruff, then the tests). Both create .venv when it is missing.
# `make test-tf`: the TensorFlow tests in their own .venv-tf (CI runs it after `make test`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tbd-installed
EXTRAS ?= all,dev

# The TensorFlow leg: its own venv (TensorFlow's wheel and its pins stay out of .venv) and only
# the tests marked `tf`, which `make test` leaves out.
TF_VENV ?= .venv-tf
TF_BIN := $(TF_VENV)/bin
TF_STAMP := $(TF_VENV)/.tbd-installed
TF_EXTRAS ?= tf,torch,rl,dev

.PHONY: install demo test test-tf test-mxnet clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the package metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/tbd demo

# Two test processes (pytest-xdist) on CI's 2 cores, one thread each (tests/conftest.py): about
# 1.5x faster than one process with two threads. TEST_WORKERS=1 runs them in this process.
# --dist worksteal: a worker that runs out of tests takes queued ones from the other, so the
# minute-long JAX tests near the end do not leave one core idle.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -m "not tf" $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist worksteal)

test: install
	$(BIN)/ruff check src tests bench
	$(PYTEST) --ignore=tests/docs --durations=15
	# The docs' commands in processes of their own (each runs in-process: a fresh interpreter's memory).
	$(PYTEST) tests/docs --durations=5

$(TF_BIN)/python:
	$(PYTHON) -m venv $(TF_VENV)

# PyTorch is not installed a second time (5.5 GB with its CUDA libraries; a CI machine's disk ran
# out on it): a .pth file appends .venv's site-packages to .venv-tf's path, after its own, so the TF
# leg imports .venv's torch and torchvision, pip counts them as installed, and whatever TensorFlow
# pins differently is installed into .venv-tf, where it comes first.
PURELIB := -c 'import sysconfig; print(sysconfig.get_path("purelib"))'
$(TF_STAMP): pyproject.toml $(STAMP) | $(TF_BIN)/python
	$(BIN)/python $(PURELIB) > "$$($(TF_BIN)/python $(PURELIB))/tbd-shares-venv.pth"
	$(TF_BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(TF_EXTRAS)]'
	touch $(TF_STAMP)

# Two test processes, as in `make test` (tracing a tf.function is single-threaded Python).
# TBD_TF_LEG: a missing TensorFlow is an error here, not a skip (tests/conftest.py).
test-tf: $(TF_STAMP)
	TBD_TF_LEG=1 $(TF_BIN)/python -m pytest -q -m tf -n 2

# MXNet 1.9.1 (the TBD paper's legacy framework) needs numpy<1.24, so it gets an environment of its
# own (made once, about a minute); then its tests: from this environment through --python
# (tests/envs/test_mxnet.py), and the registry-generated ones of the mxnet pairs inside it.
MXNET_ENV ?= .venv-mxnet
test-mxnet: install
	[ -x $(MXNET_ENV)/bin/python ] || $(BIN)/tbd env create mxnet --framework mxnet==1.9.1 --framework pytest --framework pytest-timeout --dir $(MXNET_ENV) --force
	TBD_MXNET_PYTHON=$(MXNET_ENV)/bin/python $(BIN)/python -m pytest -q tests/envs/test_mxnet.py
	$(MXNET_ENV)/bin/python -m pytest -q tests/workloads/test_registry_workloads.py -k mxnet

clean:
	rm -rf $(VENV) $(TF_VENV) $(MXNET_ENV) build *.egg-info src/*.egg-info
