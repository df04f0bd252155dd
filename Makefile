# warmstart: the two README commands.
#   make repro   environment from the lock (if missing) + Debian packages + `dvc repro`
#   make test    environment from the lock (if missing) + Debian packages + pytest
# The environment is installed only from requirements/*.txt (exact versions, sha256 hashes):
#   make env          CPU set (requirements/cpu.txt, torch +cpu), installed by uv (requirements/uv.txt)
#   make env GPU=1    GPU set (requirements/gpu.txt, CUDA torch, Liger; then flash-attn)
#   make lock         regenerate the lock from pyproject.toml (a deliberate act: then make test, commit)
#   make test-latest  canary: a throwaway env at the newest versions the ranges allow, then the tests
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
KERNEL ?= warmstart
DEB_PACKAGES ?= poppler-utils
PYTEST_ARGS ?= -n 2 --dist loadfile
GPU ?=
# The torch release both sets are locked at; `make lock` reads it, installs never do.
TORCH_VERSION ?= 2.13.0
# Where the +cpu torch wheel is found (a folder or a find-links URL), for `make lock`, `make env`
# (uv reads no pip configuration: it is passed as --find-links) and the canary.
TORCH_WHEELS ?= $(if $(wildcard /opt/wheels),/opt/wheels,https://download.pytorch.org/whl/cpu/torch/)
UV_VERSION ?= 0.13.9  # `make lock` pins it (with hashes) in requirements/uv.txt
TOOLS ?= .venv-tools
UV := $(TOOLS)/bin/uv
CANARY ?= /tmp/warmstart-canary

LOCK := requirements/$(if $(GPU),gpu,cpu).txt
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-$(if $(GPU),gpu,cpu)
PIP_LOCKED := --require-hashes --no-deps

.PHONY: help env deb lint repro test seed-spread testbed-seeds kernel lock test-latest clean-env

help:
	@echo "make repro        run the whole study (dvc repro) -> reports/report.pdf"
	@echo "make test         ruff (lint + format check), then the test suite"
	@echo "make seed-spread  after repro: every run per seed (SEEDS) -> reports/metrics/seed_spread.json"
	@echo "make testbed-seeds  the context testbed per seed (TESTBED_SEEDS) -> reports/metrics/testbed_seeds.json"
	@echo "make env          create .venv from $(LOCK) only (GPU=1: the CUDA set)"
	@echo "make lock         regenerate requirements/*.txt and environment.yml from pyproject.toml"
	@echo "make test-latest  canary: tests in a throwaway env at the newest allowed versions"

env: $(STAMP)

# The lock is for CPython 3.11 on x86_64 Linux; anything else is refused with the reason.
# A venv whose lock changed (or built for the other set) is rebuilt from scratch, never patched.
$(STAMP): $(LOCK) pyproject.toml | $(UV)
	@$(PYTHON) -c 'import sys, platform; ok = sys.version_info[:2] == (3, 11) and platform.machine() == "x86_64"; \
	  ok or sys.exit(f"error: requirements/*.txt are locked for CPython 3.11 on x86_64 Linux; {sys.executable} is " \
	  f"{platform.python_version()} on {platform.machine()}. Use PYTHON=python3.11, or regenerate with make lock.")'
	@if [ -d $(VENV) ]; then echo "rebuilding $(VENV) from $(LOCK)"; rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(UV) pip install -q --python $(BIN)/python --require-hashes --no-deps --compile-bytecode \
	  --find-links $(TORCH_WHEELS) -r $(LOCK)
	$(if $(GPU),$(BIN)/python -m pip install -q --require-hashes --no-deps --no-build-isolation -r requirements/flash-attn.txt)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	$(BIN)/python -m warmstart.notebook.kernel install --name $(KERNEL) >/dev/null
	$(BIN)/nbstripout --install --attributes .gitattributes 2>/dev/null || true
	@touch $@

kernel: env
	$(BIN)/python -m warmstart.notebook.kernel install --name $(KERNEL)

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

test: env deb lint
	PATH="$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (locked, configured in pyproject.toml): lint and formatting, checked before the tests.
lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Run-to-run spread of the study (after `make repro`): every run trained again per seed (~9 min per extra
# seed on 2 CPU cores), reports/metrics/seed_spread.json; then `make repro` reruns only the report.
SEEDS ?= 1337 1338 1339
seed-spread: env deb
	PATH="$(BIN):$$PATH" $(BIN)/python -m warmstart.evaluate.seed_spread --seeds $(SEEDS)

# The context-extension testbed once per training seed (~2 min per extra seed on 2 CPU cores; the study seed's
# is the context_testbed stage's own), reports/metrics/testbed_seeds.json; then `make repro` reruns the context
# collection and the report.
TESTBED_SEEDS ?= 1337 1338 1339 1340 1341
testbed-seeds: env deb
	PATH="$(BIN):$$PATH" $(BIN)/python -m warmstart.context seeds --seeds $(TESTBED_SEEDS)

# uv, pinned with its hashes (requirements/uv.txt), resolves the lock and installs it: it fetches and
# unpacks wheels in parallel and compiles their bytecode on both cores (the env in ~1 min instead of
# ~2.4 min with pip on the 2-core VM). Its venv is separate, so the lock never locks itself.
$(UV): requirements/uv.txt
	rm -rf $(TOOLS)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install -q $(PIP_LOCKED) -r requirements/uv.txt

lock: $(UV)
	$(PYTHON) dev/lock.py --uv $(UV) --torch $(TORCH_VERSION) --torch-wheels $(TORCH_WHEELS) $(if $(UPGRADE),--upgrade)
	{ sed -n '1,2p' requirements/uv.txt; echo "uv==$(UV_VERSION)" | $(UV) pip compile -q --generate-hashes \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header -; } > requirements/uv.txt.new
	mv requirements/uv.txt.new requirements/uv.txt
	@echo "now: make test (rebuilds .venv from the new lock), then commit requirements/ and environment.yml"

# Canary: nothing here touches .venv or the lock. torch stays at TORCH_VERSION (+cpu): the
# newest torch on PyPI is a multi-GB CUDA build. CANARY_ARGS are passed to pytest; the test that
# the env equals the lock is left out (here it differs by design: the diff is printed instead).
CANARY_ARGS ?= $(PYTEST_ARGS) --deselect tests/test_env_files.py::test_installed_environment_is_the_lock
test-latest: $(UV) deb
	rm -rf $(CANARY) && mkdir -p $(CANARY)
	$(PYTHON) dev/lock.py --uv $(UV) --torch $(TORCH_VERSION) --torch-wheels $(TORCH_WHEELS) --latest $(CANARY)
	$(PYTHON) -m venv $(CANARY)/venv
	$(CANARY)/venv/bin/python -m pip install -q --no-deps --find-links $(TORCH_WHEELS) -r $(CANARY)/latest.txt
	$(CANARY)/venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	$(CANARY)/venv/bin/python -m warmstart.notebook.kernel install --name $(KERNEL) >/dev/null
	@diff <(grep -oE '^[A-Za-z0-9._-]+==[^ ]+' requirements/cpu.txt) <(grep -oE '^[A-Za-z0-9._-]+==[^ ]+' $(CANARY)/latest.txt) \
	  | grep -E '^[<>]' | sed 's/^</  locked:/; s/^>/  latest:/' || echo "  (the newest versions are the locked ones)"
	PATH="$(CANARY)/venv/bin:$$PATH" $(CANARY)/venv/bin/python -m pytest $(CANARY_ARGS)

clean-env:
	rm -rf $(VENV) $(TOOLS)
