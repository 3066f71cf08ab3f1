# sealgate — every target sets up .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8443

.PHONY: run test lint bench clean registry-deps cache-deps

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

# Debian's redis-server (shared cache tests and bench) and promtool (package prometheus:
# the chart's alert rules), installed the same way.
cache-deps:
	@for pair in redis-server:redis-server promtool:prometheus; do \
	  bin=$${pair%%:*}; pkg=$${pair#*:}; \
	  if ! command -v $$bin >/dev/null 2>&1 && [ ! -x /usr/bin/$$bin ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing Debian's $$pkg for the tests"; \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkg) >/dev/null \
	        || echo "could not install $$pkg; run: sudo apt-get install -y $$pkg"; \
	    else \
	      echo "$$bin is missing; its tests will skip. Install it with: sudo apt-get install -y $$pkg"; \
	    fi; \
	  fi; \
	done

run: $(VENV)/.installed-run registry-deps
	$(BIN)/python scripts/dev_server.py --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-test registry-deps cache-deps
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-lint
	$(BIN)/ruff check webhook tests scripts bench
	$(BIN)/mypy --strict webhook
	$(BIN)/hadolint --failure-threshold style Dockerfile

# Latency/throughput as ratios against a bare Starlette endpoint, measured in one run.
bench: $(VENV)/.installed-test registry-deps cache-deps
	$(BIN)/python bench/admission_bench.py
	$(BIN)/python bench/shared_cache_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
