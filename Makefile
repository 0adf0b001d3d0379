# bff: every target CI runs is here. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help venv helm-venv demo test test-newest-python bench bench-smoke check lint format typecheck layers clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml devtools/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e ./devtools
	touch $(STAMP)

venv: $(STAMP) ## create .venv; install bff with its test and dev extras, and bff-devtools (devtools/: IdP, demo)

demo: $(STAMP) ## run the whole system: IdP, demo API and bff with the demo SPA on http://localhost:8000
	$(BIN)/bff demo

# Test processes (pytest-xdist); each test file stays in one process, so its module fixtures start once.
TEST_WORKERS ?= 2

test: $(STAMP) ## run the whole test suite (starts its own redis-server per test process)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

NEWEST_VENV := .venv-newest
HELM_VENV := .venv-helm
# Helm v4 as a library (a Go shim in a wheel): the registries have no helm binary. Needs Python >= 3.12.
HELM_SDKPY := helm-sdkpy==0.1.32

helm-venv: ## .venv-helm: real Helm (helm-sdkpy) for tests/test_helm_chart.py, on the newest CPython >= 3.12 found
	@py="$$(.ci/newest-python)"; \
	if [ -z "$$py" ]; then echo "helm-venv: no CPython >= 3.12 on this machine; the real-Helm chart tests skip"; exit 0; fi; \
	[ -x $(HELM_VENV)/bin/python ] || "$$py" -m venv $(HELM_VENV); \
	$(HELM_VENV)/bin/python -m pip install --quiet '$(HELM_SDKPY)'

test-newest-python: $(STAMP) ## the fault suite again (but the Redis failovers), `bff serve` on the newest CPython >= 3.12 (skipped if none)
	@py="$$(.ci/newest-python)"; \
	if [ -z "$$py" ]; then echo "test-newest-python: no CPython >= 3.12 on this machine; skipped"; exit 0; fi; \
	echo "test-newest-python: bff serve on $$("$$py" -V)"; \
	[ -x $(NEWEST_VENV)/bin/python ] || "$$py" -m venv $(NEWEST_VENV); \
	$(NEWEST_VENV)/bin/python -m pip install --quiet --upgrade pip && \
	$(NEWEST_VENV)/bin/python -m pip install --quiet -e . && \
	BFF_FAULTS_PYTHON=$(NEWEST_VENV)/bin/python $(BIN)/python -m pytest -q -p no:cacheprovider -m 'not failover' tests/faults

bench: $(STAMP) ## benchmark the data plane against nginx and its peers (Apache + mod_auth_openidc, a Node BFF), enforce the targets (< 8 min)
	$(BIN)/python -m tests.bench

bench-smoke: $(STAMP) ## the benchmark in seconds: every part runs, only correctness is enforced (CI)
	$(BIN)/python -m tests.bench --smoke --compare-with .  # this tree against itself: the comparison runs too

check: lint typecheck layers ## lint, type-check and enforce the import layers

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check bff devtools tests
	$(BIN)/ruff format --check bff devtools tests

format: $(STAMP) ## format the code
	$(BIN)/ruff format bff devtools tests
	$(BIN)/ruff check --fix bff devtools tests

typecheck: $(STAMP) ## mypy --strict over the package, the devtools and the tests
	$(BIN)/mypy

layers: $(STAMP) ## import-linter: the layering of ARCHITECTURE.md
	$(BIN)/lint-imports

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) $(NEWEST_VENV) $(HELM_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
