"""aiohttp's own test suite, run on goloop and on stock asyncio.

What it proves
    aiohttp 3.14.5 (the `apps` extra's pin) passes its own ~5,700 tests on
    goloop as it does on stock asyncio, but for the differences listed, with
    a reason each, in expected_differences.txt -- and no test process
    crashes.  The tests come from the released sdist (sha256 pinned in
    aiohttp_suite.py) and run against the released wheel, in a virtualenv
    of their own, .venvs/aiohttp-suite-py3.X, with goloop built from this
    tree.  Nothing of aiohttp's is committed here: it is downloaded (once,
    cached in ~/.cache/goloop/aiohttp-suite) when the test runs.

How
    One pytest session per loop, at once, in the unpacked sdist, with the
    suite's pytest.ini and its default marker selection, each with one
    pytest-xdist worker (a crashed worker is recorded against its test and
    replaced).  On the goloop run, aiohttp_suite_plugin.py makes goloop the
    loop asyncio creates, so aiohttp's `loop` fixture ("[pyloop]" ids),
    asyncio.run() and loop_context() all give goloop loops, at goloop's
    default 10 ms time slice (preemption on).  Results are compared per test
    id.  Design: aiohttp_suite.py; plugin: aiohttp_suite_plugin.py.

Running it
    GOLOOP_AIOHTTP_SUITE=1 pytest tests/aiohttp_suite          # this interpreter
    GOLOOP_AIOHTTP_SUITE=1 GOLOOP_AIOHTTP_SUITE_PATHS=quick pytest tests/aiohttp_suite
    make aiohttp-suite                                         # the full run
    python tests/aiohttp_suite/run_aiohttp_suite.py [--loop goloop|stock]
        [--time-slice 1ms] [-k EXPR] [tests/test_x.py ...] [--details]
    (standalone: the same comparison, with a subset, or one loop.)

    The README test command (scripts/test.sh) runs the quick subset on
    CPython 3.12 only (its GOLOOP_AIOHTTP_SUITE_PYTHONS; it sets
    GOLOOP_AIOHTTP_SUITE for each version itself).  Without
    GOLOOP_AIOHTTP_SUITE the comparison is skipped (saying how to run it);
    the checks of the list's format and of the comparison's logic always
    run.  When the suite cannot be prepared (no network for the sdist or
    the tools, a failed install), the comparison fails under CI=true and is
    skipped, with the error, otherwise (scripts/test.sh then says so in a
    loud line at the end).  The first run downloads the sdist and makes
    the virtualenv (about 2 minutes, under a minute with pip's cache warm;
    goloop is rebuilt there, ~35 s, whenever its sources change).  The
    quick subset took 226 s (both loops at once) on a shared 2-core
    machine, plus ~5 s for the end-to-end crash check.  A full comparison (5,688 tests per loop) uses ~37 minutes of
    CPU: ~20-25 minutes of wall time on a quiet 2-core machine, 47-48
    measured on a shared one under a load of 5-8.  The report goes to
    .venvs/reports/aiohttp-suite-3.X.txt when that directory exists.

Environment
    GOLOOP_AIOHTTP_SUITE      1 (or all): run on this interpreter; 3.12 or
                              3.12,3.13: only on those versions
    GOLOOP_AIOHTTP_SUITE_JOBS xdist workers in all (default 2: one per loop)
    GOLOOP_AIOHTTP_SUITE_DEADLINE  seconds one loop's run may take (4500)
    GOLOOP_AIOHTTP_SUITE_K    a -k expression, for a quick partial run
    GOLOOP_AIOHTTP_SUITE_PATHS  files or node ids of the sdist, space-separated,
                              for a partial run; `quick`: QUICK_PATHS below,
                              the files every listed difference is in
                              (~1,100 tests, ~5 min); `all` or unset: all
    CI                        true: a suite that cannot be prepared fails
    GOLOOP_TIME_SLICE         the goloop run's slice (default goloop's)
    GOLOOP_AIOHTTP_CACHE      where the sdist is kept

When it fails
    "Differences not in expected_differences.txt": a test now differs.
    Find why (run_aiohttp_suite.py TEST_ID --details); a goloop bug is
    fixed in goloop; a test that checks stock asyncio's internals, or
    cannot hold under preemption, is listed with its reason.  "entries
    that no longer hold": remove the line (an entry whose reason starts
    with "races under preemption:" or "flaky:" may or may not differ and
    is never stale for not differing).  "CRASH", "a worker ... died", "did
    not finish": a test process died (a signal, an abort); never listed,
    always fixed.  A difference that does not come back when the test runs
    again alone is reported as flaky, not failed (it is load or order,
    not the test); a crash never is.
"""
import os
import subprocess
import sys
import tarfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:      # pytest's prepend import mode has put it there already
    sys.path.insert(0, HERE)
import aiohttp_suite as suite  # noqa: E402  (it puts tests/ on sys.path)
import suite_runner as sr  # noqa: E402

GATE = "GOLOOP_AIOHTTP_SUITE"
# GOLOOP_AIOHTTP_SUITE_PATHS=quick: a partial run that still sees every
# listed difference, and aiohttp's client/server, websocket, proxy and
# connector tests, for a CI that cannot spend the full run's time.
QUICK_PATHS = ("tests/test_proxy_functional.py tests/test_loop.py tests/test_connector.py "
               "tests/test_web_app.py tests/test_web_functional.py tests/test_client_request.py "
               "tests/test_benchmarks_client.py tests/test_web_websocket_functional.py "
               "tests/test_client_functional.py")

def _gate():
    """None when the comparison should run here, else why not."""
    value = os.environ.get(GATE, "").strip()
    this = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if value in ("", "0"):
        return (f"aiohttp {suite.AIOHTTP_VERSION}'s own test suite on goloop vs stock "
                f"(~25-50 min on 2 cores, downloads the sdist from PyPI): set {GATE}=1, or "
                f"{GATE}=3.12 to run it on that Python only")
    if value in ("1", "all"):
        return None
    wanted = {v.strip() for v in value.split(",")}
    if this not in wanted:
        return f"{GATE}={value}: not on Python {this}"
    return None


def test_expected_differences_file_parses():
    sr.check_expected_file(suite.EXPECTED_FILE, "tests/")
    quick = QUICK_PATHS.split()
    for tid, _, reason, n in sr.load_expected(suite.EXPECTED_FILE):
        if not reason.startswith(suite.EXCLUDE):
            assert tid.split("::")[0] in quick, \
                f"line {n}: {tid}: its file is not in QUICK_PATHS (the quick run would not see it)"


def _run(loop, records, done=True):
    run = suite.LoopRun(loop)
    run.records = {tid: {"id": tid, "outcome": o, "detail": f"E   Boom {tid}"}
                   for tid, o in records.items()}
    run.returncode = 0 if done else -11
    run.done = {"counters": {"probe": "probe", "goloop_loops": 1,
                             "goloop_stats": {"preemptions": 1}}} if done else None
    run.probe = "probe" if done else None
    return run


def test_comparison_logic():
    """Unexpected, expected, stale, may-differ and crash cases, without
    running anything."""
    stock = _run("stock", {"t::a": "pass", "t::b": "pass", "t::c": "pass", "t::d": "skip",
                           "t::e": "pass", "t::f": "pass"})
    goloop = _run("goloop", {"t::a": "pass", "t::b": "fail", "t::c": "error", "t::d": "skip",
                             "t::e": "pass", "t::f": "crash"})
    expected = {"t::c": "a reason", "t::d": "stale one", "t::e": "races under preemption: ok",
                "t::f": "a crash is never excused", "t::gone": "not in the run"}
    c = suite.Comparison("3.12.1", goloop, stock, expected, filtered=False)
    assert [t for t, _, _ in c.unexpected] == ["t::b", "t::f"]
    assert [t for t, *_ in c.expected_seen] == ["t::c"]
    assert sorted(t for t, _ in c.stale) == ["t::d", "t::gone"]
    assert any("CRASH on goloop: t::f" in p for p in c.problems)
    assert not c.ok
    # a difference that does not come back when run again is flaky, a crash is not
    again_s, again_g = _run("stock", {"t::b": "pass", "t::f": "pass"}), \
        _run("goloop", {"t::b": "pass", "t::f": "pass"})
    c.recheck(again_s, again_g)
    assert [t for t, *_ in c.flaky] == ["t::b"]
    assert [t for t, _, _ in c.unexpected] == ["t::f"]
    assert "t::b" in c.report() and "CRASH" in c.report()


def test_a_subset_judges_the_entries_it_covers():
    """Narrowed to files, a listed test of those files that is not in the
    runs is stale; one of other files is not judged."""
    stock = _run("stock", {"tests/a.py::x": "pass"})
    goloop = _run("goloop", {"tests/a.py::x": "pass"})
    expected = {"tests/a.py::gone[pyloop]": "a reason", "tests/b.py::y": "another reason"}
    c = suite.Comparison("3.12.1", goloop, stock, expected, filtered=True, paths=["tests/a.py"])
    assert [t for t, _ in c.stale] == ["tests/a.py::gone[pyloop]"]
    c = suite.Comparison("3.12.1", goloop, stock, expected, filtered=True,
                         paths=["tests/a.py::gone"])
    assert [t for t, _ in c.stale] == ["tests/a.py::gone[pyloop]"]


def test_an_unfinished_run_is_a_problem():
    stock = _run("stock", {"t::a": "pass"})
    goloop = _run("goloop", {"t::a": "pass"}, done=False)
    c = suite.Comparison("3.12.1", goloop, stock, {}, filtered=True)
    assert any("the goloop run did not finish" in p for p in c.problems)
    assert not c.ok


@pytest.mark.parametrize("side", ["goloop", "stock"])
def test_a_process_that_dies_fails_the_comparison(side):
    """A test whose worker died (xdist's crash report), a worker that went
    down, or the whole run ended by a signal: each fails, on either loop,
    even when both loops crashed in the same test (no difference)."""
    for records, nodes_down, rc in (({"t::a": "crash"}, [], 1),
                                    ({"t::a": "pass"}, [{"node_down": "gw0",
                                                         "error": "Fatal Python error"}], 1),
                                    ({"t::a": "pass"}, [], -9)):
        runs = {loop: _run(loop, {"t::a": "pass"}) for loop in ("goloop", "stock")}
        runs[side] = _run(side, records)
        runs[side].nodes_down = nodes_down
        runs[side].returncode = rc
        c = suite.Comparison("3.12.1", runs["goloop"], runs["stock"], {}, filtered=True)
        assert c.problems and not c.ok, (records, nodes_down, rc)
    both = suite.Comparison("3.12.1", _run("goloop", {"t::a": "crash"}),
                            _run("stock", {"t::a": "crash"}), {}, filtered=True)
    assert not both.unexpected and not both.ok


def _prepared():
    """suite.prepare() for this interpreter, when the comparison is to run
    here; else a skip saying why not -- or, under CI=true, a failure when
    the suite could not be prepared."""
    why_not = _gate()
    if why_not:
        pytest.skip(why_not)
    try:
        return suite.prepare(sys.executable)
    except (RuntimeError, OSError, tarfile.TarError, subprocess.SubprocessError) as e:
        # pip download or install, venv, unpacking (a bug here fails, of course)
        message = (f"aiohttp {suite.AIOHTTP_VERSION}'s test suite could NOT be prepared "
                   f"(sdist, virtualenv, tools or goloop build): {type(e).__name__}: {e}")
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


CRASHING_TESTS = """
import os, signal

def test_fine():
    pass

def test_dies():
    if os.environ.get("GOLOOP_AIOHTTP_LOOP") == "goloop":
        os.kill(os.getpid(), signal.SIGSEGV)
"""


def test_a_test_process_killed_by_a_signal_fails_the_comparison(tmp_path):
    """End to end, in the suite's virtualenv (~5 s): a test whose xdist
    worker dies of SIGSEGV on the goloop run is recorded as a crash, and
    the comparison fails, as it would for one of aiohttp's."""
    version, vpy, _ = _prepared()
    (tmp_path / "tree" / "tests").mkdir(parents=True)
    (tmp_path / "tree" / "tests" / "test_crash.py").write_text(CRASHING_TESTS)
    runs = sr.run_loops(("goloop", "stock"), lambda loop: suite.run_loop(
        loop, vpy, str(tmp_path / "tree"), str(tmp_path), paths=["tests"], deadline_seconds=300))
    c = suite.Comparison(version, runs["goloop"], runs["stock"], {}, filtered=True)
    assert runs["goloop"].outcome("tests/test_crash.py::test_dies") == "crash", c.report()
    assert runs["stock"].outcome("tests/test_crash.py::test_dies") == "pass", c.report()
    assert any(p.startswith("CRASH on goloop") for p in c.problems) and not c.ok, c.report()


def test_aiohttp_suite_goloop_vs_stock():
    prepared = _prepared()
    pattern = os.environ.get("GOLOOP_AIOHTTP_SUITE_K")
    paths = os.environ.get("GOLOOP_AIOHTTP_SUITE_PATHS", "").strip()
    paths = {"quick": QUICK_PATHS, "all": ""}.get(paths, paths).split()
    version, runs, comparison, workdir = suite.run_suite(
        python=sys.executable,
        patterns=[pattern] if pattern else [],
        paths=paths,
        jobs=int(os.environ.get("GOLOOP_AIOHTTP_SUITE_JOBS", "2")),
        deadline_seconds=float(os.environ.get("GOLOOP_AIOHTTP_SUITE_DEADLINE", "4500")),
        prepared=prepared,
    )
    sr.conclude(comparison, "aiohttp-suite", version, work=workdir)
