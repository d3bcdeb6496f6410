# idmsync — developer entry points. `make test` installs everything it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION ?= 0.13.8
export IDMSYNC_CACHE ?= $(HOME)/.cache/idmsync
export UV_PROJECT_ENVIRONMENT ?= $(CURDIR)/.venv
UV := $(shell command -v uv 2>/dev/null || echo $(IDMSYNC_CACHE)/uv/bin/uv)
PY := $(UV_PROJECT_ENVIRONMENT)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: help
help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN{FS=":.*?## "}{printf "  %-18s %s\n",$$1,$$2}'

$(IDMSYNC_CACHE)/uv/bin/uv:
	python3 -m pip install --quiet --target $(IDMSYNC_CACHE)/uv/lib uv==$(UV_VERSION)
	mkdir -p $(IDMSYNC_CACHE)/uv/bin && ln -sf $(IDMSYNC_CACHE)/uv/lib/bin/uv $@

# The locks are hashed requirements files (uv pip compile): pinned, verified, and free of
# index URLs. requirements.lock holds what the operator and CLI need at run time (the image and
# the package test install it), requirements-dev.lock adds the dev group. `make lock` refreshes
# both after a change to pyproject.toml. Bytecode is compiled at install: the tests start the
# operator and the CLI as subprocesses many times, and without .pyc files
# (PYTHONDONTWRITEBYTECODE, read-only trees) each start recompiles the kubernetes client's API
# modules, seconds of CPU every time.
VENV_STAMP := $(UV_PROJECT_ENVIRONMENT)/.idmsync-installed

.PHONY: venv
venv: $(VENV_STAMP) ## create .venv from requirements-dev.lock (idempotent)

$(VENV_STAMP): requirements-dev.lock pyproject.toml | $(UV)
	test -x $(PY) || $(UV) venv --quiet --python python3.11 $(UV_PROJECT_ENVIRONMENT)
	$(UV) pip sync --quiet --compile-bytecode --python $(PY) --require-hashes requirements-dev.lock
	$(UV) pip install --quiet --python $(PY) --no-deps -e .
	touch $@

.PHONY: lock
lock: $(UV) ## re-resolve requirements.lock and requirements-dev.lock from pyproject.toml
	$(UV) pip compile pyproject.toml --generate-hashes --universal \
		--python-version 3.11 --quiet -o requirements.lock
	$(UV) pip compile pyproject.toml --group dev --generate-hashes --universal \
		--python-version 3.11 --quiet -o requirements-dev.lock

.PHONY: lint
lint: venv ## ruff, ruff format --check, mypy strict, import-linter, gofmt
	$(PY) -m ruff check operator tests bench
	$(PY) -m ruff format --check operator tests bench
	$(PY) -m mypy
	cd $(CURDIR) && $(UV_PROJECT_ENVIRONMENT)/bin/lint-imports
	@unformatted=$$(PATH=$${GO_BIN_DIR:-/usr/local/go/bin}:$$PATH gofmt -l tools/health); \
	  if [ -n "$$unformatted" ]; then echo "gofmt: $$unformatted"; exit 1; fi

.PHONY: fmt
fmt: venv ## format and autofix
	$(PY) -m ruff format operator tests bench
	$(PY) -m ruff check --fix operator tests bench

.PHONY: test-unit
test-unit: venv ## fast tests: no servers but the in-process IDM stub
	$(PYTEST) tests/unit tests/contract -m "not controlplane and not openidm" -q

include $(wildcard mk/*.mk)

.PHONY: test
test: venv $(TEST_PREREQS) ## install everything, run every test (unit, contract, integration, e2e)
	$(PYTEST) tests -q $(PYTEST_ARGS)
