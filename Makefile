# Plait's developer entry points. `make demo` and `make test` work on a fresh machine:
# they install what is missing (Debian packages, the venv, the Kubernetes binaries) first.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help deps venv k8s-tools artifact-tools check lint format typecheck layers test test-unit demo \
        cluster-up cluster-down image image-import crds clean clean-cache
.PHONY: manifests values-doc chart-check
.PHONY: bench
.PHONY: web

BENCH_ARGS ?=

help: ## Show the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

deps: ## Install missing system packages (PostgreSQL server, openssl; needs root or sudo).
	@hack/install-deps.sh

$(BIN)/.installed: pyproject.toml
	@echo "==> creating the virtualenv in $(VENV)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --upgrade pip
	@$(BIN)/pip install --quiet --progress-bar off -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed ## Create the virtualenv with Plait and its dev tools.

k8s-tools: ## Build (once, then reuse) etcd, the Kubernetes control plane, kubectl, kube-proxy, kwok and helm.
	@hack/build-k8s.sh >/dev/null

artifact-tools: ## Build (once, then reuse) plait-artifacts and the S3-compatible server of the tests.
	@hack/build-artifacts.sh >/dev/null

web/node_modules/.package-lock.json: web/package-lock.json
	@echo "==> npm ci (the dashboard's locked front-end dependencies)"
	@cd web && npm ci --no-audit --no-fund --loglevel=error

operator/plait/web_application/static/.vite/manifest.json: web/node_modules/.package-lock.json $(wildcard web/src/*) web/vite.config.ts web/tsconfig.json
	@echo "==> building the dashboard's scripts and styles (web/ -> web_application/static/)"
	@cd web && npm run --silent build >/dev/null

web: operator/plait/web_application/static/.vite/manifest.json ## Build the dashboard's front end (Vite; hashed files).

check: lint typecheck layers ## Lint, format check, type check and the import layers.

lint: venv
	@echo "==> ruff"
	@$(BIN)/ruff check operator tests hack
	@$(BIN)/ruff format --check operator tests hack

format: venv ## Apply ruff's formatting and safe fixes.
	@$(BIN)/ruff check --fix operator tests hack
	@$(BIN)/ruff format operator tests hack

typecheck: venv
	@echo "==> mypy"
	@$(BIN)/mypy

layers: venv ## Check that imports point down the layers of DESIGN.md (import-linter).
	@echo "==> import layers"
	@$(BIN)/lint-imports --no-cache

test: deps venv k8s-tools artifact-tools web check ## Everything the tests need, then the whole suite.
	@echo "==> pytest"
	@PLAIT_K8S_BIN_DIR="$$(hack/build-k8s.sh)" $(BIN)/python hack/pytest_lanes.py $(PYTEST_ARGS)

test-unit: venv ## Only the tests that need no Kubernetes (PostgreSQL is still real).
	@$(BIN)/pytest -m 'not e2e' $(PYTEST_ARGS)

demo: deps venv k8s-tools web ## Bring up PostgreSQL and the control plane and show Plait at work.
	@PLAIT_K8S_BIN_DIR="$$(hack/build-k8s.sh)" $(BIN)/python hack/demo.py

cluster-up: deps venv k8s-tools ## Start a local control plane with its real node in .local/cluster (stays up).
	@PLAIT_K8S_BIN_DIR="$$(hack/build-k8s.sh)" $(BIN)/python -m plait.testing.cluster up --real-node --state-dir .local/cluster

image: venv ## Build Plait's image as an OCI archive without a container engine (needs root).
	@$(BIN)/python -m plait.testing.plait_image

image-import: ## Import image archives into cluster-up's real node: make image-import IMAGES=tool.tar
	@test -n "$(IMAGES)" || { echo "usage: make image-import IMAGES='a.tar b.tar'" >&2; exit 2; }
	@$(BIN)/python -m plait.testing.cluster import-image --state-dir .local/cluster $(IMAGES)

cluster-down: ## Stop the control plane started by cluster-up.
	@$(BIN)/python -m plait.testing.cluster down --state-dir .local/cluster

clean: ## Remove the venv and caches inside the repository.
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .local
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

clean-cache: ## Remove the built Kubernetes binaries (~/.cache/plait); the next run rebuilds.
	rm -rf "$${PLAIT_CACHE_DIR:-$${XDG_CACHE_HOME:-$$HOME/.cache}/plait}"

manifests: venv k8s-tools ## Copy crds/ into the chart and render manifests/ (plain YAML) from it.
	@PLAIT_K8S_BIN_DIR="$$(hack/build-k8s.sh)" $(BIN)/python hack/render-manifests.py

values-doc: venv ## Regenerate the values reference and the permissions table in docs/install.md.
	@$(BIN)/python hack/gen-values-doc.py

chart-check: venv k8s-tools ## Only the install checks: chart, manifests, image, security scan.
	@PLAIT_K8S_BIN_DIR="$$(hack/build-k8s.sh)" $(BIN)/pytest tests/install $(PYTEST_ARGS)

bench: deps venv k8s-tools ## Benchmarks against the raw control plane (bench/, docs/benchmarks.md).
	@test -x $(BIN)/py-spy || $(BIN)/pip install --quiet --progress-bar off py-spy
	@PLAIT_K8S_BIN_DIR="$$(hack/build-k8s.sh)" $(BIN)/python -m bench $(BENCH_ARGS)
