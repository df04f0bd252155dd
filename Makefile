# warmstart: the two README commands.
#   make repro   environment (if missing) + Debian packages + `dvc repro`
#   make test    environment (if missing) + Debian packages + pytest
# GPU users: make TORCH="torch==2.9.1" (any CUDA build) before the first run.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
KERNEL ?= warmstart
DEB_PACKAGES ?= poppler-utils
PYTEST_ARGS ?= -n 2 --dist loadfile

BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

.PHONY: help env deb repro test kernel clean-env

help:
	@echo "make repro   run the whole study (dvc repro) -> reports/report.pdf"
	@echo "make test    run the test suite"
	@echo "make env     create .venv only (TORCH=$(TORCH))"

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (warmstart)" >/dev/null
	$(BIN)/nbstripout --install --attributes .gitattributes 2>/dev/null || true
	@touch $@

kernel: env
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (warmstart)"

# Debian packages: installed only when missing; without root, say what to run.
deb:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "error: missing Debian packages:$$missing" >&2; \
	    echo "run: sudo apt-get update && sudo apt-get install -y$$missing" >&2; exit 1; \
	  fi; \
	fi

repro: env deb
	PATH="$(BIN):$$PATH" $(BIN)/dvc repro

test: env deb
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

clean-env:
	rm -rf $(VENV)
