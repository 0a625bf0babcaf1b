# Two commands for a fresh machine: `make run` (demo on the embedded broker) and `make test` (the default suite).
# Both install the project into a project-local virtualenv on first use, and again whenever pyproject.toml changes.

PYTHON3 ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=
TEST_PROCESSES ?= 2

.PHONY: run test chaos venv clean

run: $(INSTALLED)
	$(VENV)/bin/availability demo

# --durations: every run names its slowest tests, to keep the default suite within its 15 minutes.
# -n/--dist (pytest-xdist): the suite in TEST_PROCESSES processes, each test file whole in one of them, so that a
# module's shared fixtures (a replay, a worker) are built once. Most integration tests wait on a broker or a worker
# rather than compute: on 2 cores two processes run the suite in about 10 minutes where one takes 17-18.
# TEST_PROCESSES=0 runs it in this process alone (a debugger, pdb).
test: $(INSTALLED)
	$(VENV_PYTHON) -m pytest -ra --durations=25 -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

# The fault-injection suite (worker kills, broker pauses, zombies, poison input, a million-event backlog...), about
# 25-30 minutes; figures go to benchmarks/results/chaos.json, see docs/RELIABILITY.md.
chaos: $(INSTALLED)
	CHAOS_RESULTS_FILE=benchmarks/results/chaos.json $(VENV_PYTHON) -m pytest -ra -m 'chaos or integration' tests/chaos $(PYTEST_ARGS)

venv: $(INSTALLED)

# quixstreams (the peak benchmark's peer baseline) pins libraries below the project's: installed without them,
# see the dev extra in pyproject.toml.
$(INSTALLED): pyproject.toml
	@$(PYTHON3) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required: set PYTHON3=/path/to/python3.11")'
	test -x $(VENV_PYTHON) || $(PYTHON3) -m venv $(VENV)
	@echo "Installing the project and its dependencies into $(VENV) (first run only; takes a minute)"
	$(VENV_PYTHON) -m pip install --disable-pip-version-check --progress-bar off -e '.[dev]'
	$(VENV_PYTHON) -m pip install --disable-pip-version-check --progress-bar off --no-deps 'quixstreams==3.28.1'
	touch $@

# Local state only (broker logs, RocksDB tables, caches); the virtualenv stays.
clean:
	rm -rf .data .pytest_cache .hypothesis
