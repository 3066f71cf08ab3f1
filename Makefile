# sealgate — every target sets up .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8443

.PHONY: run test lint bench clean registry-deps kube-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,chart]'
	touch $@ $(VENV)/.installed-run

$(VENV)/.installed-lint: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,lint,chart]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-run

# Debian's docker-registry (CNCF distribution) for the real-registry tests and the demo.
registry-deps:
	@if ! command -v docker-registry >/dev/null 2>&1 && [ ! -x /usr/bin/docker-registry ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's docker-registry for the registry tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry) >/dev/null \
	      || echo "could not install docker-registry; run: sudo apt-get install -y docker-registry"; \
	  else \
	    echo "docker-registry is missing; registry tests will skip. Install it with: sudo apt-get install -y docker-registry"; \
	  fi; \
	fi

# Debian's etcd for the real-API-server tests (tests/kube_server.py).
kube-deps:
	@if ! command -v etcd >/dev/null 2>&1 && [ ! -x /usr/bin/etcd ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's etcd-server for the API server tests"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server) >/dev/null \
	      || echo "could not install etcd-server; run: sudo apt-get install -y etcd-server"; \
	  else \
	    echo "etcd is missing; API server tests will skip. Install it with: sudo apt-get install -y etcd-server"; \
	  fi; \
	fi

run: $(VENV)/.installed-run registry-deps
	$(BIN)/python scripts/dev_server.py --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-test registry-deps kube-deps
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-lint
	$(BIN)/ruff check webhook tests scripts bench
	$(BIN)/mypy --strict webhook
	$(BIN)/hadolint --failure-threshold style Dockerfile

# Latency/throughput as ratios against a bare Starlette endpoint, measured in one run.
bench: $(VENV)/.installed-test registry-deps
	$(BIN)/python bench/admission_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
