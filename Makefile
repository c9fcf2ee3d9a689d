# Hirepay — every developer and CI entry point. `make run` and `make test` do all set-up themselves.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
PROTO_SRC := protos
PROTO_OUT := gen
PROTO_FILES := $(shell find $(PROTO_SRC) -name '*.proto' | sort)

.PHONY: help install system-deps protos run test test-fast lint format bench token clean

help:
	@echo "make run      start the whole system (embedded PostgreSQL + Stripe sandbox by default)"
	@echo "make test     install everything, generate code, run the full test suite"
	@echo "make lint     ruff check + format check"
	@echo "make protos   regenerate protobuf/gRPC code into $(PROTO_OUT)/"
	@echo "make bench    throughput/latency benchmarks beside pgbench"
	@echo "make token ROLE=company USER=<id>   print a development JWT"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

# The environment comes only from the lockfile; --frozen fails if pyproject and lock disagree.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	UV_PYTHON_DOWNLOADS=never $(UV) sync --frozen --python $(PYTHON)
	@touch $@

install: $(VENV)/.synced $(PROTO_OUT)/.generated

# Debian packages the tests use (promtool into .tools/bin, Chromium); quick when already present.
system-deps:
	bash tools/system_deps.sh $(TOOLS)/bin

$(PROTO_OUT)/.generated: $(VENV)/.synced $(PROTO_FILES)
	rm -rf $(PROTO_OUT) && mkdir -p $(PROTO_OUT)
	$(PY) -m grpc_tools.protoc -I $(PROTO_SRC) -I $$($(PY) -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))') \
		--python_out=$(PROTO_OUT) --pyi_out=$(PROTO_OUT) --grpc_python_out=$(PROTO_OUT) $(PROTO_FILES)
	$(PY) tools/hirepay_dev/pkginit.py $(PROTO_OUT)/hirepay
	@touch $@

protos:
	rm -f $(PROTO_OUT)/.generated
	$(MAKE) $(PROTO_OUT)/.generated

run: install
	$(PY) -m hirepay_dev.stack

test: install system-deps
	$(PY) -m pytest -q --durations=25 $(PYTEST_ARGS)

test-fast: install system-deps
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install
	$(PY) -m hirepay_dev.bench $(BENCH_ARGS)

token: install
	@$(PY) -m hirepay_dev.token --role "$(ROLE)" --user "$(USER)"

clean:
	rm -rf $(VENV) $(TOOLS) $(PROTO_OUT) .data .pytest_cache
