# What the README and CI run. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CODE := $(wildcard rayml pipelines tests bench)

.PHONY: help venv kafka-jars java-client lint format types test test-unit test-cluster demo notebook bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "rayml needs Python 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install rayml with its dev tools

kafka-jars: venv  ## resolve the Apache Kafka broker jars with Maven (cached in ~/.m2)
	$(PY) -c 'from rayml.localkafka import resolve_jars; print(resolve_jars(__import__("pathlib").Path(".rayml")))'

lint: venv  ## ruff lint and format check; import layers (import-linter)
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/ruff format --check $(CODE)
	$(VENV)/bin/lint-imports

format: venv  ## apply ruff's formatting and fixes
	$(VENV)/bin/ruff format $(CODE)
	$(VENV)/bin/ruff check --fix $(CODE)

types: venv  ## mypy --strict on rayml/
	$(VENV)/bin/mypy

java-client:  ## build the Java client and run its schema tests (clients/java/target/rayml-client.jar)
	mvn -B -q -f clients/java/pom.xml package

test: venv kafka-jars java-client  ## all tests: unit, then integration on a real broker and a real Ray
	$(PY) -m pytest tests

test-unit: venv  ## unit tests only (no Kafka, no Ray)
	$(PY) -m pytest tests/unit

test-cluster: venv kafka-jars  ## the cluster scenarios only (multi-node Ray, kills; also in `make test`)
	$(PY) -m pytest -m cluster tests/integration

demo: venv kafka-jars  ## the main job on a local broker and a local Ray
	$(PY) -m rayml.cli.demo

notebook: venv kafka-jars  ## run notebooks/quickstart.ipynb in place, outputs kept (local broker and Ray); export docs/rollouts.png
	$(PY) notebooks/execute.py

bench: venv kafka-jars  ## benchmarks, printed side by side with their baselines
	$(PY) -m bench $(BENCH_ARGS)

clean:  ## remove local state (broker data, models, jars) but not the venv
	rm -rf .rayml kafka-check
