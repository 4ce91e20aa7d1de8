# The two commands of the README: `make demo` and `make test`. Everything else supports them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CACHE := $(HOME)/.cache/stgym
export PIP_CACHE_DIR := $(CACHE)/pip
# Every extra the suite tests (rl: stable-baselines3 + torch with its CUDA libraries + Ray,
# ~3 GB of wheels). pip's HTTP cache keeps none of these downloads here, so the wheels are
# kept in $(WHEELS): a cold venv downloads them (~45 s here) and installs (~3 min); a warm
# one only resolves against the index and installs from the folder.
EXTRAS := test,dashboards,rl
WHEELS := $(CACHE)/wheels
PYTEST_ARGS ?=

.PHONY: venv build demo test test-multihost unit services-up services-down services-status bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt setup.py
	@start=$$(date +%s); \
	test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	$(PY) -m pip install -q -U pip && \
	$(PY) -m pip install -q -c constraints.txt setuptools wheel cython numpy && \
	$(PY) -m pip download -q --no-build-isolation -c constraints.txt -d $(WHEELS) '.[$(EXTRAS)]' && \
	$(PY) -m pip install -q --no-build-isolation --no-index --find-links $(WHEELS) \
	    -c constraints.txt -e '.[$(EXTRAS)]' && \
	touch $@ && echo "[timing] venv $$(( $$(date +%s) - start )) s"

# The compiler's warnings are filtered from the output, never its exit status: a failed
# Cython or C build fails `make build` (pipefail).
build: venv
	@set -o pipefail; $(PY) setup.py -q build_ext --inplace 2>&1 \
		| { grep -v -e '^$$' -e 'warning: ' -e 'Compiling' || true; }

demo: build
	$(VENV)/bin/stgym demo

services-up: build
	@bash compose/bare/services.sh up

services-down: venv
	@bash compose/bare/services.sh down

services-status: venv
	@bash compose/bare/services.sh status

# Starts every real service, runs the whole suite, stops what it started; pytest's exit code wins.
test: build
	@start=$$(date +%s); bash compose/bare/services.sh up || { bash compose/bare/services.sh down; exit 1; }; \
	echo "[timing] services-up $$(( $$(date +%s) - start )) s"; \
	t0=$$(date +%s); $(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	echo "[timing] pytest $$(( $$(date +%s) - t0 )) s"; \
	bash compose/bare/services.sh down; exit $$rc

# Unit tests only (no services), for a quick loop while developing; first the import layers
# (the contracts in pyproject.toml: dependencies point one way).
# The network-namespace lab alone (tests/ops/test_multihost.py, root only; `make test` runs it
# too, bounded by its pytest timeout): its own services host in namespaces, not the stack above.
test-multihost: build
	$(VENV)/bin/pytest -m multihost $(PYTEST_ARGS)

unit: build
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -m "not services" $(PYTEST_ARGS)

# Each bench runs with only the services it needs, so idle JVMs do not share the cores with the
# timed code: physics needs none, the env bench Kafka (producer throughput), the pipeline bench
# the whole Kafka -> stream -> PostgreSQL path, the tracking bench the MLflow server, the tracing
# bench that path with the collector and Jaeger.
bench: build
	@$(VENV)/bin/stgym bench physics || exit 1; \
	bash compose/bare/services.sh up kafka || { bash compose/bare/services.sh down; exit 1; }; \
	$(VENV)/bin/stgym bench envs && { bash compose/bare/services.sh up || { bash compose/bare/services.sh down; exit 1; }; } && \
	$(VENV)/bin/stgym bench pipeline && $(VENV)/bin/stgym bench tracking && $(VENV)/bin/stgym bench tracing; \
	rc=$$?; bash compose/bare/services.sh down; exit $$rc

clean:
	rm -rf build physics_ext/*.so physics_ext/_*.c producers/envs/*.so producers/envs/_*.c
