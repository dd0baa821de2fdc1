# make bench        the benchmark suite (python -m benchmarks): every workload on
#                   goloop, uvloop, asyncio and rloop, 5 repetitions (~15 min on 2 cores)
# make bench-quick  smaller sizes, 1 repetition (~2 min)
# Both run in a virtualenv of their own, .venvs/bench, with goloop and the bench
# extra pip-installed (made again when the sources change).  PYTHON picks the
# interpreter (make bench PYTHON=python3.13); BENCH_ARGS adds options
# (make bench BENCH_ARGS="-k fairness").
PYTHON ?= python3
VENV := .venvs/bench
BENCH_ARGS ?=
SOURCES := pyproject.toml setup.py $(shell find csrc goloop -name "*.[chS]" -o -name "*.py")

.PHONY: bench bench-quick

bench: $(VENV)/installed
	$(VENV)/bin/python -m benchmarks $(BENCH_ARGS)

bench-quick: $(VENV)/installed
	$(VENV)/bin/python -m benchmarks --quick $(BENCH_ARGS)

$(VENV)/installed: $(SOURCES)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check ".[bench]"
	touch $@
