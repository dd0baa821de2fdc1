"""Run aiohttp's own test suite (the released sdist of a pinned version) on
goloop and on stock asyncio, and compare them test by test.

Used by test_aiohttp_suite.py (pytest) and run_aiohttp_suite.py (standalone).
The design follows tests/conformance (CPython's test.test_asyncio on both
loops), and what the two share is in tests/suite_runner.py: installing
goloop as asyncio's default loop in the child, the child's process group and
deadline, the expected-differences format and reader (`test id | versions |
reason`, the "races under preemption:" convention), the traceback summary,
the counts table and report, and the report file.

What is prepared, once, and reused while it is still right:
  * the sdist: aiohttp-3.14.5.tar.gz from PyPI (`pip download`), its sha256
    checked against SDIST_SHA256, kept in the cache directory
    ($GOLOOP_AIOHTTP_CACHE, else $XDG_CACHE_HOME/goloop/aiohttp-suite, else
    ~/.cache/goloop/aiohttp-suite), and unpacked there WITHOUT its aiohttp/
    package: the tests must import the released wheel, not the source tree;
  * a virtualenv of its own, .venvs/aiohttp-suite-py3.X in the repository
    (git ignores .venvs/): the aiohttp wheel with its speedups extra, the
    suite's test tools from requirements/test.in, pinned by the sdist's own
    requirements/test.txt (its lock file) used as constraints, and goloop
    built from a copy of this tree in a temporary directory (pip builds in
    the source tree, and build/ here is shared with other runs), rebuilt
    when goloop's sources change.

Each loop's run is one pytest session in the unpacked sdist, with the suite's
pytest.ini (warnings are errors, strict xfail, 120 s per test) but not its
addopts (coverage, doctests, -n auto), its default marker selection, and
aiohttp_suite_plugin.py loaded with -p: that plugin puts goloop in place on
the goloop run, guards the network and writes one JSON line per test.  Tests
run in pytest-xdist workers, so a worker that crashes is recorded against
its test ("crash") and replaced, and the run goes on; a run that dies
altogether, or outlives its deadline, is reported as incomplete.  Both runs
(goloop and stock) go at once by default, one worker each, so that both see
the same machine load.

The goloop run uses goloop's default time slice (10 ms; preemption on)
unless time_slice (or GOLOOP_TIME_SLICE in the environment) says otherwise.

The comparison: every test whose outcome differs between the two runs
(pass, fail, error, skip, xfail, xpass, crash, or missing from one run) must
be listed in expected_differences.txt for this Python version; a listed test
must still differ, unless its reason starts with "races under preemption:"
or "flaky:" (a test that may or may not differ); a crash is always a
failure.  Lines whose reason starts with "exclude:" are not differences but
tests left out of both runs (--deselect; a node id prefix, so a whole file
can go).  Differences not listed are run again by themselves (one more
session per loop, apart from the rest of the suite); one that does not
differ then is reported as flaky, not failed -- unless it was a crash.
Besides, a complete, unfiltered goloop run must show that goloop was in
use: the plugin's probe, at least MIN_GOLOOP_LOOPS goloop loops, and
preemptions.  Tests that reached beyond loopback (the plugin's guard kept
them here) are listed as notes.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if os.path.dirname(HERE) not in sys.path:     # tests/, for the shared module
    sys.path.append(os.path.dirname(HERE))
import suite_runner as sr  # noqa: E402

AIOHTTP_VERSION = "3.14.5"          # the `apps` extra's pin in pyproject.toml
SDIST_NAME = f"aiohttp-{AIOHTTP_VERSION}.tar.gz"
SDIST_SHA256 = "5558a7f5a05af9ecf744af91e5baefc436f93c9333e656c27ec253f9a6bbe178"
EXPECTED_FILE = os.path.join(HERE, "expected_differences.txt")
PLUGIN = "aiohttp_suite_plugin"

# The suite's tools (requirements/test.in and test-common.in of 3.14.5), less
# what only aiohttp's own CI needs: mypy (type checks), python-on-whales
# (autobahn, deselected by marker), pytest-cov (coverage is off; coverage
# itself stays: pytest.ini names one of its warnings), setuptools-git and
# pkgconfig (packaging).  Versions come from the sdist's requirements/test.txt.
TEST_TOOLS = (
    "pytest", "pytest-xdist", "pytest-mock", "pytest-timeout", "pytest-codspeed",
    "blockbuster", "coverage", "freezegun", "proxy.py", "trustme", "zlib_ng",
    "isal; python_version < '3.14'", "uvloop", "gunicorn",
)
VENV_FORMAT = 3                     # bump to remake every suite venv

# aiohttp's own default selection (its pytest.ini addopts), kept as it is.
MARKERS = "not dev_mode and not autobahn and not internal"
PER_TEST_TIMEOUT = 120              # pytest.ini's; pytest-timeout ends a hung test
OUTCOMES = ("pass", "fail", "error", "skip", "xfail", "xpass", "crash")
MAY_DIFFER = (sr.MAY_PASS, "flaky:")
EXCLUDE = "exclude:"

# Plausibility of a whole (unfiltered) goloop run: the ~3,000 tests that use
# the loop fixture each make a goloop loop.
MIN_GOLOOP_LOOPS = 2000


def log_to_stderr(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the sdist

def cache_dir():
    explicit = os.environ.get("GOLOOP_AIOHTTP_CACHE")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "goloop", "aiohttp-suite")


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ensure_sdist(python, log=log_to_stderr):
    """The pinned sdist in the cache, downloaded if missing; its hash checked."""
    cache = cache_dir()
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, SDIST_NAME)
    if not os.path.exists(path):
        log(f"aiohttp suite: downloading {SDIST_NAME} into {cache}")
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            # --no-binary for aiohttp alone: its build requirements may come
            # as wheels (pip prepares the sdist's metadata to check it).
            _run_checked([python, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                          "--no-deps", "--no-binary", "aiohttp", "-d", tmp,
                          f"aiohttp=={AIOHTTP_VERSION}"], "pip download")
            os.replace(os.path.join(tmp, SDIST_NAME), path)
    digest = sha256_of(path)
    if digest != SDIST_SHA256:
        os.remove(path)         # the next run downloads it again
        raise RuntimeError(f"{path}: sha256 {digest}, expected {SDIST_SHA256} (removed)")
    return path


def ensure_tree(sdist, log=log_to_stderr):
    """The sdist unpacked beside it, without the aiohttp/ package; returns
    its directory.  Made in a temporary directory and renamed into place,
    so a run that stops half-way leaves nothing half-made."""
    top = f"aiohttp-{AIOHTTP_VERSION}"
    tree = os.path.join(os.path.dirname(sdist), f"{top}-tests")
    stamp = os.path.join(tree, ".sha256")
    if _read(stamp) == SDIST_SHA256:
        return tree
    log(f"aiohttp suite: unpacking {SDIST_NAME} (without aiohttp/) into {tree}")
    tmp = tempfile.mkdtemp(dir=os.path.dirname(sdist), prefix=".unpack-")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers()
                   if m.name.startswith(top + "/") and not m.name.startswith(f"{top}/aiohttp/")]
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp, members=members, **kwargs)
    with open(os.path.join(tmp, top, ".sha256"), "w") as f:
        f.write(SDIST_SHA256)
    shutil.rmtree(tree, ignore_errors=True)
    os.replace(os.path.join(tmp, top), tree)
    shutil.rmtree(tmp, ignore_errors=True)
    return tree


# ---------------------------------------------------------------- the virtualenv

def venv_dir(version):
    mm = ".".join(version.split(".")[:2])
    return os.path.join(ROOT, ".venvs", f"aiohttp-suite-py{mm}")


# What goloop's wheel is built from; everything else in the tree is not.
GOLOOP_SOURCES = ("goloop", "csrc", "setup.py", "pyproject.toml", "MANIFEST.in", "README.md",
                  "LICENSE")
_SKIP_SUFFIXES = (".so", ".o", ".pyc")


def goloop_source_files():
    """[(relative path, absolute path)] of goloop's sources in this tree."""
    files = []
    for name in GOLOOP_SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isfile(path):
            files.append((name, path))
        for folder, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "build"))
            for n in sorted(names):
                if n.endswith(_SKIP_SUFFIXES) or n == "_runtime_cffi.c":   # built, not source
                    continue
                full = os.path.join(folder, n)
                files.append((os.path.relpath(full, ROOT), full))
    return files


def goloop_source_hash(files):
    h = hashlib.sha256()
    for rel, full in files:
        h.update(rel.encode() + b"\0")
        with open(full, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def make_venv(python, log=log_to_stderr):
    """The suite's virtualenv for `python`'s version, made if missing or
    broken; returns its interpreter (whose pip fetches everything, so the
    interpreter given needs only venv)."""
    venv = venv_dir(sr.python_version(python))
    vpy = os.path.join(venv, "bin", "python")
    if not _works(vpy):
        log(f"aiohttp suite: making the virtualenv {venv}")
        _run_checked([python, "-m", "venv", "--clear", venv], "venv")
    return vpy


def install_tools(vpy, tree, log=log_to_stderr):
    """aiohttp's wheel and the suite's tools, once per pin."""
    stamp = os.path.join(os.path.dirname(os.path.dirname(vpy)), ".aiohttp-suite-tools")
    key = f"{VENV_FORMAT} {AIOHTTP_VERSION} {SDIST_SHA256}"
    if _read(stamp) == key:
        return
    log(f"aiohttp suite: installing aiohttp {AIOHTTP_VERSION} (wheel) and the suite's tools")
    constraints = os.path.join(tree, "requirements", "test.txt")
    _run_checked([vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  "--only-binary", "aiohttp", "-c", constraints,
                  f"aiohttp[speedups]=={AIOHTTP_VERSION}", *TEST_TOOLS], "pip install (tools)")
    _write(stamp, key)


def install_goloop(vpy, log=log_to_stderr):
    """goloop built from a copy of this tree, again whenever its sources
    change (pip would build in the tree itself, in build/, which other runs
    share)."""
    stamp = os.path.join(os.path.dirname(os.path.dirname(vpy)), ".aiohttp-suite-goloop")
    files = goloop_source_files()
    key = goloop_source_hash(files)
    if _read(stamp) == key:
        return
    log(f"aiohttp suite: building goloop from a copy of {ROOT} into {vpy}")
    with tempfile.TemporaryDirectory(prefix="goloop-aiohttp-suite-build-") as tmp:
        for rel, full in files:
            os.makedirs(os.path.join(tmp, os.path.dirname(rel)), exist_ok=True)
            shutil.copy2(full, os.path.join(tmp, rel))
        _run_checked([vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                      "--force-reinstall", "--no-deps", tmp], "pip install (goloop)")
    _write(stamp, key)


def _works(python):
    try:
        return subprocess.run([python, "-c", "pass"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _run_checked(argv, what):
    r = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode:
        raise RuntimeError(f"aiohttp suite: {what} failed ({r.returncode}):\n"
                           f"$ {' '.join(argv)}\n{(r.stdout + r.stderr)[-4000:]}")
    return r


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _write(path, text):
    with open(path, "w") as f:
        f.write(text + "\n")


# ---------------------------------------------------------------- expected differences

def load_entries(version, path=EXPECTED_FILE):
    """({test id: reason} of differences, [node id prefixes excluded]) that
    apply to Python `version`."""
    listed = sr.expected_for(version, path)
    excluded = sorted(t for t, r in listed.items() if r.startswith(EXCLUDE))
    differences = {t: r for t, r in listed.items() if not r.startswith(EXCLUDE)}
    return differences, excluded


# ---------------------------------------------------------------- one loop's run

class LoopRun(sr.LoopRunBase):
    """One loop's run: {test id: record}, its last line, its notes."""

    def __init__(self, loop):
        super().__init__(loop)
        self.done = None            # the plugin's last line, if it got there
        self.nodes_down = []        # workers that died
        self.returncode = None
        self.stdout_tail = ""

    @property
    def complete(self):
        return self.done is not None and self.returncode in (0, 1)

    @property
    def counters(self):
        return (self.done or {}).get("counters", {})

    def counts(self):
        c = dict.fromkeys(OUTCOMES, 0)
        for r in self.records.values():
            c[r["outcome"]] = c.get(r["outcome"], 0) + 1
        return c

    def crashes(self):
        return sorted(t for t, r in self.records.items() if r["outcome"] == "crash")

    def network(self):
        return {t: r["network"] for t, r in self.records.items() if r.get("network")}


def pytest_argv(vpy, workdir, tag, jobs, excluded=(), patterns=(), only=None, paths=()):
    argv = [vpy, "-P", "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider",
            "-p", PLUGIN, "-m", MARKERS, "--strict-markers", "-q", "-rN", "--color=no",
            "-n", str(max(1, jobs)), "--max-worker-restart", "1000",
            "--basetemp", os.path.join(workdir, f"{tag}-tmp")]
    for prefix in excluded:
        argv += ["--deselect", prefix]
    for p in patterns:
        argv += ["-k", p]
    if only is not None:
        argv += list(only)      # node ids; --deselect still applies
    else:
        argv += list(paths) or ["tests"]
    return argv


def child_env(loop, out, time_slice=None):
    """The run's environment: this one less what would change the run
    (an outer PYTHONPATH could bring in another goloop, PYTEST_ADDOPTS other
    options), plus the plugin's folder and its settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "COV_CORE_SOURCE",
                        "COVERAGE_PROCESS_START", "PYTEST_XDIST_AUTO_NUM_WORKERS")}
    env["PYTHONPATH"] = HERE
    env["PYTHONFAULTHANDLER"] = "1"
    env["GOLOOP_AIOHTTP_LOOP"] = loop
    env["GOLOOP_AIOHTTP_RESULTS"] = out
    if loop == "goloop" and time_slice:
        env["GOLOOP_TIME_SLICE"] = str(time_slice)
    return env


def run_loop(loop, vpy, tree, workdir, jobs=1, excluded=(), patterns=(), only=None, paths=(),
             deadline_seconds=4500.0, time_slice=None, tag=None):
    """Run the selection on one loop ("goloop" or "stock"); returns a LoopRun."""
    tag = tag or loop
    run = LoopRun(loop)
    out = os.path.join(workdir, f"{tag}.jsonl")
    open(out, "w").close()
    argv = pytest_argv(vpy, workdir, tag, jobs, excluded, patterns, only, paths)
    logs = os.path.join(workdir, tag)
    t0 = time.monotonic()
    # xdist's workers are in the run's process group: none outlives it.
    run.returncode = sr.run_child(argv, logs, deadline_seconds, child_env(loop, out, time_slice),
                                  cwd=tree)
    if run.returncode is None:
        run.notes.append(f"hard deadline of {deadline_seconds:.0f} s reached; run killed")
    run.seconds = time.monotonic() - t0
    run.stderr_tail = sr.tail(logs + ".stderr")     # faulthandler's dumps, pytest's errors
    run.stdout_tail = sr.tail(logs + ".stdout", 3000)
    _read_results(out, run)
    if sr.signal_note(run.returncode):
        run.notes.append("pytest " + sr.signal_note(run.returncode))
    elif run.returncode not in (None, 0, 1):
        run.notes.append(f"pytest exited with status {run.returncode} "
                         f"(2 interrupted, 3 internal error, 4 usage error, 5 no tests)")
    if run.done is None and run.returncode is not None:
        run.notes.append("the run did not reach its end; its output ends with:\n"
                         + run.stderr_tail[-2000:] + run.stdout_tail[-2000:])
    return run


def _read_results(path, run):
    with open(path) as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:      # a line cut off by a kill
                continue
            if "id" in r:
                run.records[r["id"]] = r
            elif "node_down" in r:
                run.nodes_down.append(r)
            elif r.get("done"):
                run.done = r
                run.probe = r.get("counters", {}).get("probe")


# ---------------------------------------------------------------- comparison

def first_error(detail):
    """The first `E   ...` line of a pytest failure text (the exception
    that failed the test, before any teardown noise), else the traceback's
    summary line."""
    for line in (detail or "").splitlines():
        if line.startswith("E ") and line[1:].strip():
            return line[1:].strip()[:300]
    return sr.summary_line(detail)


class Comparison(sr.ComparisonBase):
    """Test ids are pytest node ids, the same on both runs; flaky entries
    are (id, stock, goloop, stock again, goloop again).  `paths`: the
    files or node ids a run was narrowed to (entries under them must be
    in the run)."""

    title = f"aiohttp {AIOHTTP_VERSION}'s test suite on goloop vs stock asyncio"
    table_head = ("loop", "passed", "failed", "errors", "skipped", "xfailed", "xpassed",
                  "crashed", "tests", "seconds", "goloop loops", "preemptions")
    flaky_means = "no difference when run again"

    def __init__(self, version, goloop, stock, expected, filtered, paths=()):
        super().__init__(version, goloop, stock, expected, filtered)
        self.paths = tuple(paths)
        self._compare()
        self._check_runs()

    def ids(self):
        return sorted(set(self.goloop.records) | set(self.stock.records))

    def _compare(self):
        for tid in self.ids():
            s, g = self.stock.outcome(tid), self.goloop.outcome(tid)
            if s == g:
                continue
            if tid in self.expected and "crash" not in (s, g):
                self.expected_seen.append((tid, s, g, self.expected[tid]))
            else:
                self.unexpected.append((tid, s, g))
        seen = set(self.ids())
        for tid, reason in sorted(self.expected.items()):
            if tid not in seen:
                if not self.filtered or self._selected(tid):
                    self.stale.append((tid, "listed, but not in this run's selection "
                                            f"(no such test on Python {self.version}?)"))
                continue
            s, g = self.stock.outcome(tid), self.goloop.outcome(tid)
            if s == g and not reason.startswith(MAY_DIFFER):
                self.stale.append((tid, f"listed, but both loops gave {s}: remove it from "
                                        "expected_differences.txt"))

    def _selected(self, tid):
        """Whether a run narrowed to self.paths (files, folders or node ids;
        no -k) had to run `tid`."""
        return any(tid == p or tid.startswith((p + "::", p + "[", p + "/"))
                   for p in (p.rstrip("/") for p in self.paths))

    def _check_runs(self):
        for run in (self.goloop, self.stock):
            for tid in run.crashes():
                self.problems.append(f"CRASH on {run.loop}: {tid}: "
                                     f"{first_error(run.records[tid].get('detail'))}")
            for down in run.nodes_down:
                self.problems.append(f"a worker of the {run.loop} run died: {down['node_down']}: "
                                     f"{sr.summary_line(down.get('error'))}")
            if not run.complete:
                self.problems.append(f"the {run.loop} run did not finish: " + "; ".join(run.notes))
            # The guard kept these on this machine, the same way on both
            # loops, so they are notes: a test that needs the network fails
            # on both and shows as no difference -- exclude it if it matters.
            for tid, attempts in sorted(run.network().items()):
                run.notes.append(f"{tid} reached beyond loopback (kept here by the plugin's "
                                 f"guard: {', '.join(attempts[:3])})")
        if not self.goloop.complete:
            return
        if not self.goloop.probe:
            self.problems.append("the goloop run did not confirm that asyncio makes goloop loops")
        if not self.filtered:
            loops = self.goloop.counters.get("goloop_loops", 0)
            if loops < MIN_GOLOOP_LOOPS:
                self.problems.append(f"implausibly little goloop: {loops} goloop loops "
                                     f"(expected at least {MIN_GOLOOP_LOOPS})")
            stats = self.goloop.counters.get("goloop_stats") or {}
            if not stats.get("preemptions"):
                self.problems.append("no task step was preempted during the goloop run")

    def recheck(self, rerun_stock, rerun_goloop):
        """Move unexpected differences that do not differ when run again
        alone to flaky (a crash always counts)."""
        still = []
        for tid, s, g in self.unexpected:
            rs, rg = rerun_stock.outcome(tid), rerun_goloop.outcome(tid)
            if rs == rg and "crash" not in (s, g, rs, rg) and rs != "missing":
                self.flaky.append((tid, s, g, rs, rg))
            else:
                still.append((tid, s, g))
        self.unexpected = still

    def table_row(self, run):
        c = run.counts()
        is_g = run.loop == "goloop"
        stats = run.counters.get("goloop_stats") or {}
        return (run.loop, c["pass"], c["fail"], c["error"], c["skip"], c["xfail"],
                c["xpass"], c["crash"], len(run.records), f"{run.seconds:.0f}",
                run.counters.get("goloop_loops", "?") if is_g else "-",
                stats.get("preemptions", "?") if is_g else "-")

    def why(self, tid, s, g):
        """The first error line of whichever side did not pass."""
        run = self.goloop if g not in ("pass", "missing") else self.stock
        return first_error((run.records.get(tid) or {}).get("detail"))

    def flaky_line(self, entry):
        tid, s, g, rs, rg = entry
        return f"{tid}: stock {s}, goloop {g}; again: {rs}, {rg}: {self.why(tid, s, g)}"

    def tails(self):
        """faulthandler's dump of a run where a process died."""
        return [f"\nThe {run.loop} run's output ends with:\n{run.stderr_tail[-4000:]}"
                for run in (self.goloop, self.stock) if run.crashes() or run.nodes_down]


# ---------------------------------------------------------------- the whole thing

def prepare(python=None, log=log_to_stderr):
    """(version, suite venv interpreter, unpacked sdist) for `python`."""
    python = python or sys.executable
    version = sr.python_version(python)
    vpy = make_venv(python, log)
    tree = ensure_tree(ensure_sdist(vpy, log), log)
    install_tools(vpy, tree, log)
    install_goloop(vpy, log)
    return version, vpy, tree


def run_suite(python=None, loops=("goloop", "stock"), jobs=2, patterns=(), paths=(),
              deadline_seconds=4500.0, time_slice=None, workdir=None,
              expected_path=EXPECTED_FILE, together=True, rerun=True, log=log_to_stderr,
              prepared=None):
    """Prepare, run `loops`, compare; returns (version, {loop: LoopRun},
    Comparison or None, workdir).

    jobs: xdist workers in all; with together (both loops at once) each run
    gets half.  patterns (-k) and paths (files or node ids under tests/)
    make a subset: then the whole-run checks are not made, and a listed
    test missing from the runs is stale only if paths (without -k) say it
    should have run.  prepared: what prepare() returned, if it was called
    already."""
    version, vpy, tree = prepared or prepare(python, log)
    differences, excluded = load_entries(version, expected_path)
    own_tmp = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="goloop-aiohttp-suite-")
    os.makedirs(workdir, exist_ok=True)
    parallel = together and len(loops) > 1
    per_run = max(1, jobs // len(loops)) if parallel else max(1, jobs)
    log(f"aiohttp suite: CPython {version}, aiohttp {AIOHTTP_VERSION}, loops "
        f"{', '.join(loops)} {'at once' if parallel else 'one after the other'}, "
        f"{per_run} worker(s) each, work files in {workdir}")

    def one(loop, **kw):
        return run_loop(loop, vpy, tree, workdir, jobs=kw.pop("jobs", per_run), excluded=excluded,
                        deadline_seconds=deadline_seconds, time_slice=time_slice, **kw)

    runs = sr.run_loops(loops, lambda loop: one(loop, patterns=patterns, paths=paths),
                        at_once=len(loops) if parallel else 1)
    comparison = None
    if "goloop" in runs and "stock" in runs:
        comparison = Comparison(version, runs["goloop"], runs["stock"], differences,
                                filtered=bool(patterns or paths),
                                paths=() if patterns else paths)
        ids = [tid for tid, s, g in comparison.unexpected if "crash" not in (s, g)]
        if rerun and ids and runs["goloop"].complete and runs["stock"].complete:
            log(f"aiohttp suite: running {len(ids)} differing test(s) again on both loops")
            again = sr.run_loops(("stock", "goloop"), lambda loop: one(
                loop, only=ids, tag=f"{loop}-again", jobs=1))
            comparison.recheck(again["stock"], again["goloop"])
    finished = comparison.ok if comparison is not None else all(r.complete for r in runs.values())
    if own_tmp and finished:
        shutil.rmtree(workdir, ignore_errors=True)
    return version, runs, comparison, workdir
