# Two commands (see README): `make demo` runs the main job, `make test` runs the tests.
# Both create .venv on first use. torch==2.13.0 goes in first: on CPU machines a bare
# `torch` requirement would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hsp-installed

.PHONY: demo test venv tools bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# promtool and the prometheus server (Debian's `prometheus` package) are needed by the
# deploy tests; CI runs as root. The package's own service is stopped: the tests start
# their own server on a free loopback port with temporary storage.
tools:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
	    && { systemctl disable --now prometheus >/dev/null 2>&1 || true; }; \
	  else echo "promtool/prometheus missing: install Debian's 'prometheus' package (deploy tests skip outside CI, fail under CI=true)"; fi; }

demo: venv
	$(BIN)/hsp train

test: venv tools
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q tests

bench: venv
	$(BIN)/python bench/planner_bench.py

clean:
	rm -rf $(VENV) runs .pytest_cache
