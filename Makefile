# make bench        the benchmark suite (python -m benchmarks): every workload on
#                   goloop, uvloop, asyncio and rloop, 5 repetitions (~15 min on 2 cores)
# make bench-quick  smaller sizes, 1 repetition (~2 min)
# make instructions instructions per unit of loop work (callgrind, python -m
#                   benchmarks.instructions; needs valgrind; ~10 min): the
#                   repeatable figure on a noisy machine
# make syscalls     system calls per echo request in the steady state (strace attached
#                   after warm-up; python -m benchmarks.syscalls --loop all; needs
#                   strace; ~1.5 min): every server kind on goloop, uvloop, asyncio and
#                   rloop; fails when goloop maps memory (mmap/munmap/mremap) or reads
#                   or writes more than once per request
# make bench-3.14   `make bench` on CPython 3.14 from the Debian sid root
#                   (scripts/sid-root.sh; .venvs/bench3.14), results in
#                   benchmarks/results/py3.14.* (rloop has no 3.14 build)
# make stress       the lost-wake-up stress probe (tests/preempt/probes/stress_probe.py)
#                   STRESS_RUNS times (default 30) per slice, fresh seeds, in the
#                   tests' virtualenv (.venvs/py3.X, made by scripts/test.sh)
# make package      goloop as users get it (scripts/check-package.sh; ~3 min): sdist and
#                   wheel (python -m build), twine check --strict, auditwheel repair to a
#                   manylinux tag, the wheel installed and run in a fresh venv with no
#                   compiler on PATH, the sdist built in another; all in a temporary
#                   directory, for PYTHON (make package PYTHON=python3.13)
# make sanitize     the native parts' suites (tests/runtime, tests/test_*.py, tests/loop)
#                   on an extension built with clang's ASan + UBSan (scripts/sanitize.sh;
#                   ~2-8 min, with the build); SANITIZE_ARGS replaces the pytest arguments
# make memcheck     the C runtime's tests under valgrind memcheck (scripts/memcheck.sh;
#                   ~3-7 min)
# make aiohttp-suite  aiohttp's own test suite (pinned sdist) on goloop and on stock
#                   asyncio, compared with tests/aiohttp_suite/expected_differences.txt
#                   (~25 min quiet); the README test command runs a quick subset
# make soak         1M task lifecycles with preemption and 100k connections opened and
#                   closed, checking that RSS and the fd count stay flat (scripts/soak.py)
# They run in a virtualenv of their own, .venvs/bench, with goloop and the bench
# extra pip-installed (made again when the sources change).  PYTHON picks the
# interpreter (make bench PYTHON=python3.13); BENCH_ARGS adds options
# (make bench BENCH_ARGS="-k fairness").
PYTHON ?= python3
VENV := .venvs/bench
BENCH_ARGS ?=
SOURCES := pyproject.toml setup.py $(shell find csrc goloop -name "*.[chS]" -o -name "*.py")

.PHONY: bench bench-quick bench-3.14 instructions syscalls stress

bench: $(VENV)/installed
	$(VENV)/bin/python -m benchmarks $(BENCH_ARGS)

bench-quick: $(VENV)/installed
	$(VENV)/bin/python -m benchmarks --quick $(BENCH_ARGS)

instructions: $(VENV)/installed
	$(VENV)/bin/python -m benchmarks.instructions $(BENCH_ARGS)

syscalls: $(VENV)/installed
	$(VENV)/bin/python -m benchmarks.syscalls --loop all $(BENCH_ARGS)

bench-3.14:
	scripts/sid-root.sh
	scripts/sid-run.sh sh -c 'command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null; \
	    test -x .venvs/bench3.14/bin/python || python3.14 -m venv .venvs/bench3.14; \
	    .venvs/bench3.14/bin/python -m pip install -q --disable-pip-version-check ".[bench]" && \
	    .venvs/bench3.14/bin/python -m benchmarks --results benchmarks/results/py3.14.jsonl $(BENCH_ARGS)'

$(VENV)/installed: $(SOURCES)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check ".[bench]"
	touch $@

STRESS_RUNS ?= 30
STRESS_PY ?= .venvs/py3.12/bin/python
stress:
	@openssl req -x509 -newkey rsa:2048 -nodes -keyout /tmp/goloop-stress-key.pem \
	    -out /tmp/goloop-stress-cert.pem -days 2 -subj /CN=localhost 2>/dev/null
	@cat /tmp/goloop-stress-key.pem /tmp/goloop-stress-cert.pem > /tmp/goloop-stress.pem
	@for slice in 0.00005 0.0002 0.001; do for i in $$(seq $(STRESS_RUNS)); do \
	    $(STRESS_PY) tests/preempt/probes/stress_probe.py $$slice /tmp/goloop-stress.pem \
	        --cycles 8 || { echo "stress: FAILED at slice $$slice, run $$i"; exit 1; }; \
	done; done; echo "stress: $(STRESS_RUNS) runs per slice, all clean"

.PHONY: package
package:
	scripts/check-package.sh $(PYTHON)

SANITIZE_ARGS ?=
.PHONY: sanitize memcheck aiohttp-suite soak
sanitize:
	scripts/sanitize.sh $(PYTHON) $(SANITIZE_ARGS)

memcheck:
	scripts/memcheck.sh $(PYTHON)

aiohttp-suite:
	$(PYTHON) tests/aiohttp_suite/run_aiohttp_suite.py

soak: $(VENV)/installed
	$(VENV)/bin/python scripts/soak.py $(SOAK_ARGS)
