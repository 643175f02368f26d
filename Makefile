# The map of developer tasks. Every target installs what it needs first.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# Tests run in parallel, a process per core up to four (most of their time is waiting on Kafka).
# Exported: tests/run-compiled runs the unit suite with the same options.
export PARALLEL ?= -n auto --maxprocesses 4 --dist worksteal
# The embedded engine and clickhouse-connect read a time without a zone in the process's zone:
# the test that runs the data-driven passes across restarts and a restate runs again east and
# west of UTC (no services needed).
ZONE_TESTS := tests/integration/test_restate_datadriven.py

.PHONY: bench setup demo test test-compiled wheel unit lint typecheck services-start services-stop services-status replay-example clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

setup: $(VENV)/.installed            ## Python env + Kafka jars + redis-server
	devstack/stack install

demo: setup                          ## services, worker, storefront for ~60 s, report from ClickHouse
	$(BIN)/attribution demo --seconds 60

test: setup                          ## lint, types, unit + integration tests on real services
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	devstack/with-services sh -c '$(BIN)/python -m pytest $(PARALLEL) -m "not shared_broker" && $(BIN)/python -m pytest -m shared_broker'
	for zone in Asia/Tokyo America/Los_Angeles; do \
	  TZ=$$zone $(PY) -c 'import time; assert time.timezone, "no time zone data"' && \
	  TZ=$$zone $(PY) -m pytest $(PARALLEL) $(ZONE_TESTS) || exit 1; done
	tests/run-compiled

test-compiled: $(VENV)/.installed    ## the unit suite against the compiled wheel the image ships
	tests/run-compiled

wheel: $(VENV)/.installed            ## dist/*.whl with the attribution core compiled by mypyc
	rm -rf build dist
	PYTHON=$(BIN)/python deploy/build-wheel dist --no-deps -q

unit: $(VENV)/.installed             ## the pure core only, no services
	$(BIN)/python -m pytest $(PARALLEL) tests/unit attribution schemas

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

services-start: setup
	devstack/stack start
services-stop:
	devstack/stack stop
services-status:
	devstack/stack status

replay-example: $(VENV)/.installed   ## attribute examples/events.jsonl offline
	$(BIN)/attribution replay examples/events.jsonl --catalog examples/catalog --out credits.csv

clean:
	devstack/stack stop
	rm -rf .data

bench: setup                         ## pipeline end to end on Kafka (throughput, latency, RSS, restore, two workers, restore of 100k journeys), replay, sink (figures, not tests)
	devstack/with-services $(BIN)/python -m bench.pipeline_bench --events 300000
	$(BIN)/python -m bench.replay_bench --events 1000000
	$(BIN)/python -m bench.sink_bench --rows 200000
