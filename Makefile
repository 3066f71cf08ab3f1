# sealgate — every target sets up .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8443

.PHONY: run test lint bench clean registry-deps kube-deps cache-deps

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

# Debian packages the tests run for real: docker-registry (CNCF distribution) for the
# registry tests and the demo, wrk for `make bench` and its test. Installed when missing
# and root; otherwise the one command to run is printed (those tests skip, or fail in CI).
DEBIAN_TOOLS := docker-registry:docker-registry wrk:wrk
registry-deps:
	@missing=""; for pair in $(DEBIAN_TOOLS); do \
	  tool=$${pair%%:*}; package=$${pair#*:}; \
	  command -v $$tool >/dev/null 2>&1 || [ -x /usr/bin/$$tool ] || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages for the tests:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
	      || echo "could not install them; run: sudo apt-get install -y$$missing"; \
	  else \
	    echo "missing Debian packages:$$missing; their tests will skip. Install them with: sudo apt-get install -y$$missing"; \
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

test: $(VENV)/.installed-test registry-deps kube-deps cache-deps
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-lint
	$(BIN)/ruff check webhook tests scripts bench
	$(BIN)/mypy --strict webhook
	$(BIN)/hadolint --failure-threshold style Dockerfile

# Warm path against a bare Starlette endpoint (wrk, same run: ratios), workers, cold path,
# memory and verification cost; then the shared cache (two replicas, with and without).
# BENCH_ARGS=--quick for a one-minute run of the first.
bench: $(VENV)/.installed-test registry-deps cache-deps
	$(BIN)/python bench/admission_bench.py $(BENCH_ARGS)
	$(BIN)/python bench/shared_cache_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
