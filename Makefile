# journeystream — everything a newcomer needs, from a fresh machine:
#   make demo   local Kafka broker + worker + simulator + live summary (Ctrl-C stops all)
#   make test   the whole test suite against a real local broker and embedded ClickHouse
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test unit integration crash-test lint bench broker-start broker-stop install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)
	deploy/kafka/broker.sh fetch
	deploy/system-deps.sh

demo: install
	$(BIN)/journeystream demo

test: install
	$(BIN)/pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m 'not integration and not crash'

integration: install
	$(BIN)/pytest -q -p no:cacheprovider -m 'integration'

crash-test: install
	$(BIN)/pytest -q -p no:cacheprovider -m crash -s

lint: $(STAMP)
	$(BIN)/ruff check --no-cache src tests bench
	$(BIN)/ruff format --no-cache --check src tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

broker-start: install
	deploy/kafka/broker.sh start

broker-stop:
	deploy/kafka/broker.sh stop

clean:
	rm -rf .local $(VENV)
