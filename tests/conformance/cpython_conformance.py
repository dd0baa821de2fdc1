"""Run CPython's own test.test_asyncio on goloop and on the stock loop, and
compare them test by test.

Used by test_cpython_asyncio_conformance.py (pytest) and run_conformance.py
(standalone).  Each loop's run is one child interpreter running
conformance_driver.py (see its docstring for the selection and for how goloop
is put in place), both at once by default.  A child that crashes or hangs
(faulthandler ends it after --timeout seconds in one test) is started again
without the tests already recorded; the test it was in is recorded as crash or
hang.  Every child runs under a hard deadline, so a run can never hang.

The goloop run preempts at an aggressive time slice (PREEMPT_TIME_SLICE, 1 ms
against the default 10 ms; GOLOOP_TIME_SLICE in the environment overrides it),
so that asyncio's machinery is exercised with steps parked mid-way, and a
complete run must show preemptions.

The comparison: every test that passes on stock (pass or expected failure)
must pass on goloop, unless it is listed in expected_differences.txt for this
Python version; a listed test must still differ (the list stays honest) --
except entries whose reason starts with "races under preemption:", tests that
depend on two steps not interleaving and so may pass or fail.  A
difference that disappears when the test is run again alone on goloop is
reported as flaky, not failed -- unless it was a crash or a hang.

What this shares with tests/aiohttp_suite (the child process groups, the
expected-differences file, the report) is in tests/suite_runner.py.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:     # tests/, for the shared module
    sys.path.append(os.path.dirname(HERE))
import suite_runner as sr  # noqa: E402

DRIVER = os.path.join(HERE, "conformance_driver.py")
EXPECTED_FILE = os.path.join(HERE, "expected_differences.txt")

PASSED = ("pass", "xfail")          # what unittest counts as success
FAILED = ("fail", "error", "xpass", "crash", "hang")

# Plausibility of a whole (unfiltered) goloop run: far fewer than this means
# the tests did not run on goloop loops.  Measured: ~900-1070 loops and
# ~16k-23k task steps on goroutines per version.
MIN_GOLOOP_LOOPS = 400
MIN_TESTS_ON_GOLOOP = 700

PREEMPT_TIME_SLICE = "1ms"


class Variants:
    """The driver's {stock class: goloop variant class} ("module.Class")."""

    def __init__(self, mapping=None):
        self.to_goloop = dict(mapping or {})
        self.to_stock = {b: a for a, b in self.to_goloop.items()}

    @staticmethod
    def _swap(tid, table):
        cls = ".".join(tid.split(".")[:4])
        return table[cls] + tid[len(cls):] if cls in table else tid

    def goloop_id(self, tid):
        return self._swap(tid, self.to_goloop)

    def stock_id(self, tid):
        return self._swap(tid, self.to_stock)


def child_env(python):
    """Environment for the children: this process's, plus the directory the
    goloop this process imports comes from when that is not site-packages
    (a source tree on PYTHONPATH), so the children test the same goloop."""
    env = dict(os.environ)
    env.setdefault("PYTHONFAULTHANDLER", "1")
    if os.path.realpath(python) != os.path.realpath(sys.executable):
        return env
    try:
        import goloop
    except ImportError:
        return env
    import site

    parent = os.path.dirname(os.path.dirname(os.path.abspath(goloop.__file__)))
    if parent not in set(site.getsitepackages() + [site.getusersitepackages()]):
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = parent + (os.pathsep + old if old else "")
    return env


def has_test_asyncio(python):
    """None if `python` has test.test_asyncio, else why not."""
    code = "import importlib.util as u, sys; sys.exit(u.find_spec('test.test_asyncio') is None)"
    r = subprocess.run([python, "-P", "-c", code], capture_output=True, text=True, timeout=60)
    if r.returncode:
        return (f"{python} has no test.test_asyncio (CPython's test suite is not installed; "
                f"Debian ships it as libpython3.X-testsuite)")
    return None


class LoopRun(sr.LoopRunBase):
    """The outcome of one loop's run: {test id: record}, counters, notes
    (crashes, hangs, restarts, deadline)."""

    def __init__(self, loop):
        super().__init__(loop)
        self.variants = {}
        self.counters = {}
        self.complete = False

    def counts(self):
        c = {"passed": 0, "failed": 0, "skipped": 0, "xfail": 0}
        for r in self.records.values():
            o = r["outcome"]
            if o == "pass":
                c["passed"] += 1
            elif o == "xfail":
                c["xfail"] += 1
            elif o == "skip":
                c["skipped"] += 1
            else:
                c["failed"] += 1
        return c


def _read_jsonl(path, variants=None, selection=None):
    records, starts, done = {}, [], None
    if not os.path.exists(path):
        return records, starts, done
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except ValueError:      # a line cut off by a crash
                continue
            if "start" in r:
                starts.append(r["start"])
            elif "done" in r:
                done = r
            elif "variants" in r:
                if variants is not None:
                    variants.update(r["variants"])
                if selection is not None and not selection:
                    selection.extend(r.get("selection", ()))
            elif "id" in r:
                records[r["id"]] = r
    return records, starts, done


def _read_ids(path):
    try:
        with open(path) as f:
            return {line.strip() for line in f if line.strip()}
    except OSError:
        return set()


def run_loop(loop, python, workdir, patterns=(), per_test_timeout=90.0,
             deadline_seconds=900.0, only=None, max_restarts=15, tag=None):
    """Run the selection on one loop ("goloop" or "stock") in child
    interpreters; returns a LoopRun."""
    tag = tag or loop
    run = LoopRun(loop)
    out = os.path.join(workdir, f"{tag}.jsonl")
    exclude = os.path.join(workdir, f"{tag}.exclude")
    open(out, "w").close()
    open(exclude, "w").close()
    argv = [python, "-P", DRIVER, "--loop", loop, "--out", out, "--exclude", exclude,
            "--timeout", str(per_test_timeout)]
    for p in patterns:
        argv += ["-k", p]
    if only is not None:
        only_path = os.path.join(workdir, f"{tag}.only")
        with open(only_path, "w") as f:
            f.write("".join(t + "\n" for t in only))
        argv += ["--only", only_path]
    env = child_env(python)
    if loop == "goloop":
        env.setdefault("GOLOOP_TIME_SLICE", PREEMPT_TIME_SLICE)
    t0 = time.monotonic()
    deadline = t0 + deadline_seconds
    for attempt in range(max_restarts + 1):
        logs = os.path.join(workdir, f"{tag}.{attempt}")
        rc = sr.run_child(argv, logs, deadline - time.monotonic(), env)
        selection = []
        records, starts, done = _read_jsonl(out, selection=selection)
        run.stderr_tail = sr.tail(logs + ".stderr")
        if done is not None:
            run.complete = True
            run.counters = done.get("counters", {})
            run.probe = done.get("probe")
            if rc not in (0, None):
                run.notes.append(f"driver exited with status {rc} after finishing")
            break
        unfinished = [s for s in starts if s not in records]
        current = unfinished[-1] if unfinished else None
        where = "in"
        if current is None and selection:
            # ended outside a test (a class or module fixture, or between
            # tests): blame the first test that has not run
            done_ids = set(records) | _read_ids(exclude)
            pending = [t for t in selection if t not in done_ids]
            if pending:
                current, where = pending[0], "before"
        if rc is None:
            run.notes.append(f"hard deadline of {deadline_seconds:.0f} s reached"
                             + (f" in {current}" if current else "") + "; run killed")
            if current:
                _append(out, {"id": current, "outcome": "hang", "seconds": 0.0,
                              "detail": f"killed at the run's hard deadline\n{run.stderr_tail}",
                              "goloop_loops": 0})
            break
        hung = "Timeout (" in run.stderr_tail
        what = "hang" if hung else "crash"
        run.notes.append(f"driver ended with status {rc} ({what})"
                         + (f" {where} {current}" if current else " outside any test"))
        if current is None:      # died while loading or between tests
            run.notes.append("its stderr ends with:\n" + run.stderr_tail[-3000:])
            break
        _append(out, {"id": current, "outcome": what, "seconds": 0.0,
                      "detail": f"{what} " + ("while the test ran" if where == "in" else
                                              "before the test started (in a fixture?)")
                                + f": driver exit status {rc}\n"
                                f"{run.stderr_tail}",
                      "goloop_loops": 0})
        with open(exclude, "a") as f:
            f.write("".join(t + "\n" for t in list(records) + [current]))
    else:
        run.notes.append(f"gave up after {max_restarts} restarts")
    run.records, _, _ = _read_jsonl(out, run.variants)
    run.seconds = time.monotonic() - t0
    return run


def _append(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------- comparison

class Comparison(sr.ComparisonBase):
    """Test ids are the goloop run's (a variant class's, where there is
    one); flaky entries are (id, goloop outcome, outcome when run again)."""

    title = "test.test_asyncio on goloop vs the stock loop"
    table_head = ("loop", "passed", "failed", "skipped", "xfail", "tests", "seconds",
                  "goloop loops", "tests on goloop", "steps on goroutines", "preemptions")
    flaky_means = "passed when run again"
    unexpected_head = "Passed on stock but not on goloop, not in expected_differences.txt"
    flaky_head = "Failed on goloop but passed when run again alone"

    def __init__(self, version, goloop, stock, expected, filtered):
        super().__init__(version, goloop, stock, expected, filtered)
        self.variants = Variants(goloop.variants or stock.variants)
        self._compare()

    def _compare(self):
        for sid, rec in sorted(self.stock.records.items()):
            if rec["outcome"] not in PASSED:
                continue
            gid = self.variants.goloop_id(sid)
            g = self.goloop.outcome(gid)
            if g in PASSED:
                continue
            if gid in self.expected:
                self.expected_seen.append((gid, rec["outcome"], g, self.expected[gid]))
            else:
                self.unexpected.append((gid, rec["outcome"], g))
        stock_ids = {self.variants.goloop_id(s) for s in self.stock.records}
        for gid, reason in sorted(self.expected.items()):
            if gid not in stock_ids:
                if not self.filtered:
                    self.stale.append((gid, "listed but not in this run's selection "
                                            f"(no such test on Python {self.version}?)"))
                continue
            s = self.stock.outcome(self.variants.stock_id(gid))
            g = self.goloop.outcome(gid)
            if s not in PASSED:
                self.stale.append((gid, f"listed, but it does not pass on stock ({s})"))
            elif g in PASSED and not reason.startswith(sr.MAY_PASS):
                self.stale.append((gid, "listed, but it passes on goloop: remove it from "
                                        "expected_differences.txt"))
        for run in (self.goloop, self.stock):
            if not run.complete:
                self.problems.append(f"the {run.loop} run did not finish: " + "; ".join(run.notes))
        if self.goloop.complete and not self.filtered:
            c = self.goloop.counters
            loops = c.get("goloop_loops", 0)
            started = (c.get("goloop_stats") or {}).get("goroutines_started", 0)
            on = self.goloop.tests_on_goloop()
            if loops < MIN_GOLOOP_LOOPS or on < MIN_TESTS_ON_GOLOOP or not started:
                self.problems.append(
                    f"implausibly little goloop: {loops} goloop loops created, {on} tests "
                    f"ran on one, {started} goroutines started (expected at least "
                    f"{MIN_GOLOOP_LOOPS}, {MIN_TESTS_ON_GOLOOP}, 1)")
            steps = c.get("goroutine_steps")
            if steps is not None and steps == 0:
                self.problems.append("no task step ran on a goroutine")
            if not (c.get("goloop_stats") or {}).get("preemptions"):
                self.problems.append("no task step was preempted during the goloop run")
        if self.goloop.complete and not self.goloop.probe:
            self.problems.append("the goloop run did not confirm that asyncio.run() uses goloop")

    def recheck(self, rerun):
        """Move unexpected differences that pass when run again (`rerun`: a
        LoopRun of just those tests on goloop) to flaky."""
        still = []
        for gid, s, g in self.unexpected:
            r = rerun.outcome(gid)
            if r in PASSED and g not in ("crash", "hang"):   # those always count
                self.flaky.append((gid, g, r))
            else:
                still.append((gid, s, g))
        self.unexpected = still

    def table_row(self, run):
        c = run.counts()
        is_g = run.loop == "goloop"
        steps = run.counters.get("goroutine_steps") if is_g else None
        preempted = (run.counters.get("goloop_stats") or {}).get("preemptions", "?")
        return (run.loop, c["passed"], c["failed"], c["skipped"], c["xfail"],
                len(run.records), f"{run.seconds:.0f}",
                run.counters.get("goloop_loops", "?") if is_g else "-",
                run.tests_on_goloop() if is_g else "-",
                ("n/a" if steps is None else steps) if is_g else "-",
                preempted if is_g else "-")

    def why(self, gid, s, g):
        return sr.summary_line((self.goloop.records.get(gid) or {}).get("detail"))

    def flaky_line(self, entry):
        gid, g, r = entry
        return f"{gid}: {g}, then {r}: {self.why(gid, None, g)}"


def run_conformance(python=None, patterns=(), jobs=2, per_test_timeout=90.0,
                    deadline_seconds=900.0, workdir=None, expected_path=EXPECTED_FILE,
                    loops=("goloop", "stock"), log=print):
    """Run the selection on `loops` with `python` (default: this interpreter);
    returns (version, {loop: LoopRun}, Comparison or None)."""
    python = python or sys.executable
    version = sr.python_version(python)
    own_tmp = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix=f"goloop-conformance-{version}-")
    log(f"conformance: CPython {version} ({python}), loops {', '.join(loops)}, "
        f"{jobs} at a time, work files in {workdir}")
    runs = sr.run_loops(loops, lambda loop: run_loop(loop, python, workdir, patterns,
                                                     per_test_timeout, deadline_seconds),
                        at_once=jobs)
    comparison = None
    if "goloop" in runs and "stock" in runs:
        expected = sr.expected_for(version, expected_path)
        comparison = Comparison(version, runs["goloop"], runs["stock"], expected,
                                filtered=bool(patterns))
        if comparison.unexpected and runs["goloop"].complete:
            ids = [gid for gid, _, _ in comparison.unexpected]
            log(f"conformance: running {len(ids)} differing test(s) again on goloop, alone")
            rerun = run_loop("goloop", python, workdir, (), per_test_timeout,
                             min(deadline_seconds, 300.0), only=ids, tag="goloop-rerun")
            comparison.recheck(rerun)
    if own_tmp and (comparison.ok if comparison is not None
                    else all(r.complete for r in runs.values())):
        shutil.rmtree(workdir, ignore_errors=True)
    return version, runs, comparison
