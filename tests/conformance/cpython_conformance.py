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
"""
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
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
MAY_PASS = "races under preemption:"


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


def python_version(python):
    out = subprocess.run([python, "-P", "-c", "import sys; print(sys.version.split()[0])"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def has_test_asyncio(python):
    """None if `python` has test.test_asyncio, else why not."""
    code = "import importlib.util as u, sys; sys.exit(u.find_spec('test.test_asyncio') is None)"
    r = subprocess.run([python, "-P", "-c", code], capture_output=True, text=True, timeout=60)
    if r.returncode:
        return (f"{python} has no test.test_asyncio (CPython's test suite is not installed; "
                f"Debian ships it as libpython3.X-testsuite)")
    return None


class LoopRun:
    """The outcome of one loop's run: {test id: record}, counters, notes."""

    def __init__(self, loop):
        self.loop = loop
        self.records = {}
        self.variants = {}
        self.counters = {}
        self.probe = None
        self.complete = False
        self.notes = []         # crashes, hangs, restarts, deadline
        self.seconds = 0.0
        self.stderr_tail = ""

    def outcome(self, tid):
        r = self.records.get(tid)
        return r["outcome"] if r else "missing"

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

    def tests_on_goloop(self):
        return sum(1 for r in self.records.values() if r.get("goloop_loops"))


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


def _tail(path, limit=6000):
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    return text[-limit:]


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
        stdout_path = os.path.join(workdir, f"{tag}.{attempt}.stdout")
        stderr_path = os.path.join(workdir, f"{tag}.{attempt}.stderr")
        with open(stdout_path, "w") as so, open(stderr_path, "w") as se:
            proc = subprocess.Popen(argv, stdout=so, stderr=se, stdin=subprocess.DEVNULL,
                                    env=env, start_new_session=True)
            try:
                rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                rc = None
        selection = []
        records, starts, done = _read_jsonl(out, selection=selection)
        run.stderr_tail = _tail(stderr_path)
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


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# ---------------------------------------------------------------- expected differences

def load_expected(path=EXPECTED_FILE):
    """[(test id, versions or None for all, reason, line number)].

    Each line: `test id | versions | reason`, versions being `all` or a
    comma-separated list of major.minor versions; a line starting with #
    is a comment."""
    entries = []
    if not os.path.exists(path):
        return entries
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in line.split("|")]
            if len(parts) != 3 or not parts[0] or not parts[2]:
                raise ValueError(f"{path}:{n}: expected `test id | versions | reason`, got {line!r}")
            versions = None if parts[1] in ("", "all") else {v.strip() for v in parts[1].split(",")}
            entries.append((parts[0], versions, parts[2], n))
    return entries


def expected_for(version, path=EXPECTED_FILE):
    """{goloop-run test id: reason} that apply to Python `version` (3.12.1)."""
    mm = ".".join(version.split(".")[:2])
    return {tid: reason for tid, versions, reason, _ in load_expected(path)
            if versions is None or mm in versions}


# ---------------------------------------------------------------- comparison

def summary_line(detail):
    """The exception line of a traceback (or the first line of a note)."""
    lines = [ln for ln in (detail or "").strip().splitlines() if ln.strip()]
    for ln in lines:        # a hang or crash: faulthandler's headline
        if ln.startswith(("Timeout (", "Fatal Python error")):
            return ln.strip()[:300]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning|Failure)\b", ln) \
                or ln.startswith("AssertionError"):
            return ln.strip()[:300]
    return (lines[-1].strip() if lines else "")[:300]


class Comparison:
    def __init__(self, version, goloop, stock, expected, filtered):
        self.version = version
        self.goloop = goloop
        self.stock = stock
        self.expected = expected
        self.filtered = filtered
        self.variants = Variants(goloop.variants or stock.variants)
        self.unexpected = []        # [(goloop id, stock outcome, goloop outcome)]
        self.expected_seen = []     # [(goloop id, reason, goloop outcome)]
        self.flaky = []             # [(goloop id, goloop outcome, rerun outcome)]
        self.stale = []             # [(goloop id, why)]
        self.problems = []          # run-level problems (incomplete run, no goloop)
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
                self.expected_seen.append((gid, self.expected[gid], g))
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
            elif g in PASSED and not reason.startswith(MAY_PASS):
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

    @property
    def ok(self):
        return not (self.unexpected or self.stale or self.problems)

    def table(self):
        rows = [("loop", "passed", "failed", "skipped", "xfail", "tests", "seconds",
                 "goloop loops", "tests on goloop", "steps on goroutines", "preemptions")]
        for run in (self.goloop, self.stock):
            c = run.counts()
            is_g = run.loop == "goloop"
            steps = run.counters.get("goroutine_steps") if is_g else None
            preempted = (run.counters.get("goloop_stats") or {}).get("preemptions", "?")
            rows.append((run.loop, c["passed"], c["failed"], c["skipped"], c["xfail"],
                         len(run.records), f"{run.seconds:.0f}",
                         run.counters.get("goloop_loops", "?") if is_g else "-",
                         run.tests_on_goloop() if is_g else "-",
                         ("n/a" if steps is None else steps) if is_g else "-",
                         preempted if is_g else "-"))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        lines = [f"CPython {self.version}: test.test_asyncio on goloop vs the stock loop"
                 + (" (filtered with -k)" if self.filtered else "")]
        for r in rows:
            lines.append("  " + "  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                                          for i, (v, w) in enumerate(zip(r, widths))))
        lines.append(f"  differences: {len(self.unexpected)} unexpected, "
                     f"{len(self.expected_seen)} expected (expected_differences.txt), "
                     f"{len(self.flaky)} flaky (passed when run again)")
        if self.goloop.probe:
            lines.append(f"  goloop probe: {self.goloop.probe}")
        return "\n".join(lines)

    def report(self):
        out = [self.table()]
        for p in self.problems:
            out.append(f"PROBLEM: {p}")
        if self.unexpected:
            out.append(f"\nPassed on stock but not on goloop ({len(self.unexpected)}), "
                       "not in expected_differences.txt:")
            for gid, s, g in self.unexpected:
                rec = self.goloop.records.get(gid, {})
                out.append(f"  {gid}: stock {s}, goloop {g}: {summary_line(rec.get('detail'))}")
        if self.stale:
            out.append(f"\nexpected_differences.txt entries that no longer hold ({len(self.stale)}):")
            for gid, why in self.stale:
                out.append(f"  {gid}: {why}")
        if self.flaky:
            out.append(f"\nFailed on goloop but passed when run again alone ({len(self.flaky)}):")
            for gid, g, r in self.flaky:
                rec = self.goloop.records.get(gid, {})
                out.append(f"  {gid}: {g}, then {r}: {summary_line(rec.get('detail'))}")
        if self.expected_seen:
            out.append(f"\nExpected differences seen ({len(self.expected_seen)}):")
            for gid, reason, g in self.expected_seen:
                out.append(f"  {gid}: goloop {g} -- {reason}")
        for run in (self.goloop, self.stock):
            if run.complete:        # else the notes are in the problems above
                for n in run.notes:
                    out.append(f"note ({run.loop}): {n}")
        return "\n".join(out)

    def details(self, limit=4000):
        """Tracebacks of the unexpected differences."""
        out = []
        for gid, s, g in self.unexpected:
            d = (self.goloop.records.get(gid) or {}).get("detail") or "(no detail)"
            if len(d) > limit:
                d = "[...]\n" + d[-limit:]
            out.append(f"---- {gid} (goloop {g})\n{d}")
        return "\n".join(out)


def run_conformance(python=None, patterns=(), jobs=2, per_test_timeout=90.0,
                    deadline_seconds=900.0, workdir=None, expected_path=EXPECTED_FILE,
                    loops=("goloop", "stock"), log=print):
    """Run the selection on `loops` with `python` (default: this interpreter);
    returns (version, {loop: LoopRun}, Comparison or None)."""
    python = python or sys.executable
    version = python_version(python)
    own_tmp = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix=f"goloop-conformance-{version}-")
    log(f"conformance: CPython {version} ({python}), loops {', '.join(loops)}, "
        f"{jobs} at a time, work files in {workdir}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {loop: pool.submit(run_loop, loop, python, workdir, patterns,
                                     per_test_timeout, deadline_seconds) for loop in loops}
        runs = {loop: f.result() for loop, f in futures.items()}
    comparison = None
    if "goloop" in runs and "stock" in runs:
        expected = expected_for(version, expected_path)
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
        _rmtree(workdir)
    return version, runs, comparison


def _rmtree(path):
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def write_report(version, text, root):
    """Write `text` to <root>/.venvs/reports/conformance-<major.minor>.txt if
    that directory exists; returns the path or None."""
    reports = os.path.join(root, ".venvs", "reports")
    if not os.path.isdir(reports):
        return None
    mm = ".".join(version.split(".")[:2])
    path = os.path.join(reports, f"conformance-{mm}.txt")
    with open(path, "w") as f:
        f.write(text + "\n")
    return path
