"""What the two "goloop vs stock asyncio" comparisons share:
tests/conformance (CPython's own test.test_asyncio) and tests/aiohttp_suite
(aiohttp's own test suite).  Each runs a test suite it does not own in child
processes, once with goloop as the loop asyncio creates and once on the stock
loop, and compares the outcomes test by test against an expected-differences
file.  This module owns the pieces that are the same in both:

In the child (stdlib only; the children load this file by path):
  install_goloop(counters)    goloop's policy as asyncio's default, loops counted
  probe_goloop(goloop, how)   check that a task's steps run on goroutines

In the runner:
  run_child(...)              one child in a process group of its own, with a
                              hard deadline; whatever it started dies with it
  kill_group(proc), tail(path)
  load_expected, expected_for, check_expected_file
                              the expected-differences file
                              (`test id | versions | reason`)
  summary_line(detail)        the exception line of a traceback
  python_version(python)
  LoopRunBase, ComparisonBase one loop's results, and the comparison's lists,
                              verdict, counts table and report
  run_loops(loops, one, at_once)    the loops' runs, at once or in turn
  write_report(name, ...)     .venvs/reports/<name>-3.X.txt
  conclude(comparison, ...)   the pytest test's end: print, write, fail
  argument_parser(doc)        the standalone scripts' command line
"""
import argparse
import concurrent.futures
import os
import re
import signal
import subprocess
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

# A listed difference whose reason starts so may or may not show in a run
# (a test that depends on two steps not interleaving): not seeing it does not
# make its line stale.
MAY_PASS = "races under preemption:"
PYTHONS = ("3.11", "3.12", "3.13", "3.14", "3.15")     # what goloop supports


# ---------------------------------------------------------------- in the child

def install_goloop(counters):
    """Make every loop asyncio creates (new_event_loop, run, Runner, ...) a
    goloop loop, counting them in counters["goloop_loops"]; returns goloop.

    goloop's policy is set, and it is asyncio's default policy class too,
    because tests reset the policy with set_event_loop_policy(None), after
    which asyncio instantiates that class again."""
    import asyncio

    import goloop

    original_init = goloop.EventLoop.__init__

    def counting_init(self, *args, **kwargs):
        counters["goloop_loops"] += 1
        original_init(self, *args, **kwargs)

    goloop.EventLoop.__init__ = counting_init
    policy = goloop._api.EventLoopPolicy   # goloop.EventLoopPolicy warns from 3.14
    if sys.version_info >= (3, 14):
        # asyncio.DefaultEventLoopPolicy is a deprecated alias there (a
        # module __getattr__ that warns; tests check that, and suites may
        # make warnings errors) of the private class asyncio instantiates.
        asyncio.unix_events._DefaultEventLoopPolicy = policy
        asyncio.events._set_event_loop_policy(policy())
    else:
        asyncio.DefaultEventLoopPolicy = policy
        asyncio.set_event_loop_policy(policy())
    return goloop


def probe_goloop(goloop, how="asyncio.new_event_loop"):
    """Run a two-step task (a wake-up step, not only the first) on a loop
    made as `how` says, "asyncio.run" or "asyncio.new_event_loop"; returns a
    description, or raises RuntimeError when the loop is not goloop's or
    the steps do not run on goroutines."""
    import asyncio

    async def probe():
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()), goloop.current()

    if how == "asyncio.run":
        loop_type, goroutine = asyncio.run(probe())
    else:
        loop = asyncio.new_event_loop()
        try:
            loop_type, goroutine = loop.run_until_complete(probe())
        finally:
            loop.close()
    if not issubclass(loop_type, goloop.EventLoop) or goroutine is None:
        raise RuntimeError(f"{how}() ran on {loop_type} with goloop.current() = {goroutine!r}: "
                           "goloop is not in use")
    return f"{how}() -> {loop_type.__module__}.{loop_type.__qualname__}, steps on {goroutine!r}"


# ---------------------------------------------------------------- children

def kill_group(proc):
    """SIGKILL `proc`'s process group (it was started with
    start_new_session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def tail(path, limit=6000):
    """The last `limit` characters of a log file ("" if there is none)."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except OSError:
        return ""
    return text[-limit:]


def run_child(argv, log_prefix, timeout, env, cwd=None):
    """Run argv with stdout and stderr to log_prefix + ".stdout" / ".stderr",
    in a process group of its own, which is killed when it ends (what it
    started -- pytest-xdist's workers, a test's servers -- goes with it) or
    when it outlives `timeout` seconds.  Returns its exit status (negative:
    the signal that ended it), or None when the deadline killed it."""
    with open(log_prefix + ".stdout", "w") as so, open(log_prefix + ".stderr", "w") as se:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=so, stderr=se, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            rc = None
        kill_group(proc)
    return rc


def signal_note(returncode):
    """A note on a child's exit status that is a signal's, else None."""
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"ended by signal {-returncode} ({name})"
    return None


def python_version(python):
    out = subprocess.run([python, "-P", "-c", "import sys; print(sys.version.split()[0])"],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


# ---------------------------------------------------------------- expected differences

def load_expected(path):
    """[(test id, versions or None for all, reason, line number)].

    Each line: `test id | versions | reason`, versions being `all` or a
    comma-separated list of major.minor versions; a line starting with #
    is a comment.  A line without a reason is an error."""
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


def check_expected_file(path, id_prefix):
    """Assert that each entry of an expected-differences file names a test
    (an id starting with `id_prefix`) once, for known Python versions, with
    a reason (a sentence, not a word)."""
    seen = set()
    for tid, versions, reason, n in load_expected(path):
        where = f"{os.path.basename(path)}:{n}"
        assert tid.startswith(id_prefix), f"{where}: {tid!r} is not a test id ({id_prefix}...)"
        assert tid not in seen, f"{where}: {tid} is listed twice"
        seen.add(tid)
        assert len(reason.split()) >= 5, f"{where}: give a real reason, not {reason!r}"
        for v in versions or ():
            assert v in PYTHONS, f"{where}: unknown Python version {v!r}"
    return seen


def expected_for(version, path):
    """{test id: reason} of the entries that apply to Python `version` (3.12.1)."""
    mm = ".".join(version.split(".")[:2])
    return {tid: reason for tid, versions, reason, _ in load_expected(path)
            if versions is None or mm in versions}


# ---------------------------------------------------------------- results

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


class LoopRunBase:
    """One loop's run: {test id: record with an "outcome"}, notes, time,
    and the goloop run's probe."""

    def __init__(self, loop):
        self.loop = loop
        self.records = {}
        self.notes = []
        self.probe = None
        self.seconds = 0.0
        self.stderr_tail = ""

    def outcome(self, tid):
        r = self.records.get(tid)
        return r["outcome"] if r else "missing"

    def tests_on_goloop(self):
        return sum(1 for r in self.records.values() if r.get("goloop_loops"))


class ComparisonBase:
    """The lists a comparison fills, its verdict, and its report.  A
    subclass fills them (in __init__, and recheck() after a run again of
    the unexpected ones) and says how its rows and entries read."""

    title = ""                  # the table's headline, after "CPython 3.X.Y: "
    table_head = ()             # the counts table's column names
    flaky_means = ""            # what "flaky" means in the summary line
    unexpected_head = "Differences not in expected_differences.txt"
    flaky_head = "Differed, but not when run again alone"

    def __init__(self, version, goloop, stock, expected, filtered):
        self.version = version
        self.goloop = goloop
        self.stock = stock
        self.expected = expected
        self.filtered = filtered
        self.unexpected = []        # [(id, stock outcome, goloop outcome)]
        self.expected_seen = []     # [(id, stock outcome, goloop outcome, reason)]
        self.flaky = []             # a subclass's tuples, id first (flaky_line)
        self.stale = []             # [(id, why)]
        self.problems = []          # crashes, incomplete runs, too little goloop

    @property
    def ok(self):
        return not (self.unexpected or self.stale or self.problems)

    # what a subclass says
    def table_row(self, run):
        """The counts table's row for `run` (table_head's columns)."""
        raise NotImplementedError

    def why(self, tid, s, g):
        """One line on why `tid` differs: the error of the side that failed."""
        raise NotImplementedError

    def flaky_line(self, entry):
        raise NotImplementedError

    def tails(self):
        """Output of the runs to show at the end of the report."""
        return []

    # the report
    def table(self):
        rows = [self.table_head] + [self.table_row(run) for run in (self.goloop, self.stock)]
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        lines = [f"CPython {self.version}: {self.title}"
                 + (" (a subset)" if self.filtered else "")]
        for r in rows:
            lines.append("  " + "  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                                          for i, (v, w) in enumerate(zip(r, widths))))
        lines.append(f"  differences: {len(self.unexpected)} unexpected, "
                     f"{len(self.expected_seen)} expected (expected_differences.txt), "
                     f"{len(self.flaky)} flaky ({self.flaky_means})")
        if self.goloop.probe:
            lines.append(f"  goloop probe: {self.goloop.probe}")
        return "\n".join(lines)

    def report(self):
        out = [self.table()]
        out += [f"PROBLEM: {p}" for p in self.problems]
        sections = (
            (self.unexpected_head, self.unexpected,
             lambda e: f"{e[0]}: stock {e[1]}, goloop {e[2]}: {self.why(*e)}"),
            ("expected_differences.txt entries that no longer hold", self.stale,
             lambda e: f"{e[0]}: {e[1]}"),
            (self.flaky_head, self.flaky, self.flaky_line),
            ("Expected differences seen", self.expected_seen,
             lambda e: f"{e[0]}: stock {e[1]}, goloop {e[2]} -- {e[3]}"),
        )
        for head, entries, line in sections:
            if entries:
                out.append(f"\n{head} ({len(entries)}):")
                out += [f"  {line(e)}" for e in entries]
        for run in (self.goloop, self.stock):
            if getattr(run, "complete", False):   # else the notes are in the problems
                out += [f"note ({run.loop}): {n}" for n in run.notes]
        out += self.tails()
        return "\n".join(out)

    def details(self, limit=4000):
        """The failure texts of the unexpected differences, on either loop."""
        out = []
        for tid, s, g in self.unexpected:
            for run in (self.goloop, self.stock):
                d = (run.records.get(tid) or {}).get("detail")
                if d:
                    d = d if len(d) <= limit else "[...]\n" + d[-limit:]
                    out.append(f"---- {tid} on {run.loop} ({run.outcome(tid)})\n{d}")
        return "\n".join(out)


def run_loops(loops, one, at_once=2):
    """{loop: one(loop)} for each of `loops`, `at_once` of them at a time
    (both at once, the default, so that both see the same machine load)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, at_once)) as pool:
        futures = {loop: pool.submit(one, loop) for loop in loops}
        return {loop: f.result() for loop, f in futures.items()}


# ---------------------------------------------------------------- the end

def write_report(name, version, text):
    """Write `text` to .venvs/reports/<name>-<major.minor>.txt when that
    directory exists (scripts/test.sh makes it); returns the path or None."""
    reports = os.path.join(ROOT, ".venvs", "reports")
    if not os.path.isdir(reports):
        return None
    mm = ".".join(version.split(".")[:2])
    path = os.path.join(reports, f"{name}-{mm}.txt")
    with open(path, "w") as f:
        f.write(text + "\n")
    return path


def conclude(comparison, name, version, details_head="Tracebacks", work=None):
    """The end of a comparison's pytest test: print the report, write it
    (with the tracebacks) to the reports folder, and fail unless the
    comparison is ok."""
    import pytest

    report = comparison.report()
    details = comparison.details()
    print("\n" + report)
    path = write_report(name, version, report + ("\n\n" + details if details else ""))
    if path:
        print(f"(written to {path})")
    if not comparison.ok:
        pytest.fail(report + (f"\n(work files in {work})" if work and os.path.isdir(work) else "")
                    + (f"\n\n{details_head}:\n{details}" if details else ""), pytrace=False)


def argument_parser(doc):
    """A standalone script's parser: its docstring's first paragraph is the
    description, the rest the epilog."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=doc.split("\n\n", 1)[1])
