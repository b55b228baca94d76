# Doorward: `make up` runs the stack, `make test` tests it. Both build .venv from uv.lock first
# and regenerate the gRPC stubs, each only when its inputs changed.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PROTOS := $(shell find proto -name '*.proto' 2>/dev/null | sort)

# uv: the one on PATH, else a private copy bootstrapped with pip (no other prerequisite).
UV_ON_PATH := $(shell command -v uv 2>/dev/null)
ifeq ($(UV_ON_PATH),)
UV     := .cache/uv-venv/bin/uv
UV_DEP := $(UV)
else
UV     := $(UV_ON_PATH)
UV_DEP :=
endif

SYNCED := $(VENV)/.doorward-synced
GEN    := gen/.doorward-generated
PTH    := $(VENV)/.doorward-gen-pth
GEN_TMP := .cache/gen.tmp

.PHONY: help up test test-unit test-integration test-e2e lint proto venv clean-gen console

# The web console (web/): built with Node.js from the committed lockfile, only when its inputs
# changed; without Node.js the API still runs and `make` says how to get it.
NODE       := $(shell command -v node 2>/dev/null)
WEB_INPUTS := $(shell find web/src -type f ! -name graphql-env.d.ts 2>/dev/null) web/index.html \
              web/package.json web/vite.config.ts web/tsconfig.json schema.graphql
WEB_DEPS   := web/node_modules/.doorward-ci
WEB_BUILT  := web/dist/.doorward-built

help:
	@echo "make up | test | test-unit | test-integration | test-e2e | lint | proto"

$(UV):
	$(PYTHON) -m venv .cache/uv-venv
	.cache/uv-venv/bin/pip install --quiet --disable-pip-version-check "uv>=0.5,<1"

$(SYNCED): uv.lock pyproject.toml | $(UV_DEP)
	$(UV) sync --frozen
	@touch $@

# Stubs go to a fresh folder that replaces gen/ in one step, so nothing stale survives a
# deleted .proto and a concurrent test run never sees a half-written gen/.
$(GEN): $(PROTOS) $(SYNCED)
	rm -rf $(GEN_TMP) && mkdir -p $(GEN_TMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$(GEN_TMP) --grpc_python_out=$(GEN_TMP) \
		--pyi_out=$(GEN_TMP) $(PROTOS)
	find $(GEN_TMP) -mindepth 1 -type d -exec touch {}/__init__.py \;
	@touch $(GEN_TMP)/.doorward-generated
	rm -rf gen && mv $(GEN_TMP) gen

# gen/ on sys.path: a .pth in the venv's site-packages (absolute path of this checkout).
$(PTH): $(SYNCED)
	echo "$(CURDIR)/gen" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/doorward_gen.pth"
	@touch $@

venv: $(SYNCED) $(GEN) $(PTH)

proto: $(GEN) $(PTH)

$(WEB_DEPS): web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	@touch $@

$(WEB_BUILT): $(WEB_DEPS) $(WEB_INPUTS)
	cd web && npm run build
	@touch $@

console:
ifeq ($(NODE),)
	@echo "Node.js not found: the API runs, the console at / is not built. Install Node.js 20+"
	@echo "(https://nodejs.org/ or: apt-get install -y nodejs npm), then run make up again."
else
	@$(MAKE) --no-print-directory $(WEB_BUILT)
endif

up: venv console
	$(VENV)/bin/doorward up

# Two workers: half the suite waits on processes it started (drills, browsers), not on a core.
test: venv console
	$(PY) -m pytest -n 2 --dist loadfile --durations=25

test-unit: venv
	$(PY) -m pytest -m unit

test-integration: venv
	$(PY) -m pytest -m integration

test-e2e: venv console
	$(PY) -m pytest -m e2e

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy doorward_kit services gateway deploy

clean-gen:
	rm -rf gen $(GEN_TMP)
