"""Child process of the conformance runner: run CPython's own test.test_asyncio
on one loop and record every test's outcome.

    python -P conformance_driver.py --loop goloop|stock --out RESULTS.jsonl
           [--exclude IDS.txt] [-k PATTERN ...] [--timeout SECONDS]

Run by cpython_conformance.py (the parent), not by hand.  It writes JSON lines
to --out, appending and flushing after each test, so that what ran before a
crash or a hang survives:

    {"start": ID}                                  before a test runs
    {"id": ID, "outcome": ..., "seconds": ..., "detail": ..., "goloop_loops": N}
    {"done": true, "counters": {...}}              after the last test

outcome is one of pass, fail, error, skip, xfail (expected failure), xpass
(unexpected success).  A test that runs longer than --timeout makes
faulthandler dump every thread's traceback to stderr and end the process; the
parent then records that test as a hang and starts this driver again with the
finished tests in --exclude.

The selection (identical for both loops):
  * every test*.py module of test.test_asyncio, loaded as unittest does;
  * test classes that build the stock loop by class, asyncio.SelectorEventLoop(),
    get goloop variants.  The variant of class C is named with the first
    "EPoll" or "Selector" in C's name replaced by "Goloop" (GoloopC if
    neither), lives in C's module, and on --loop goloop it replaces C:
      - the per-loop classes (named ...EventLoopTests, defining
        create_event_loop(): test_events, test_sendfile, test_sock_lowlevel)
        are reduced to the epoll one, EPollEventLoopTests, whose variant
        GoloopEventLoopTests has create_event_loop() return
        goloop.new_event_loop().  (The poll/select classes test the stock
        loop with other selectors: run time and nothing for goloop.)
      - classes whose new_loop() returns asyncio.SelectorEventLoop()
        (test_buffered_proto, test_server, test_sslproto): new_loop()
        returns goloop.new_event_loop();
      - classes whose setUp() builds asyncio.SelectorEventLoop()
        (test_base_events, test_unix_events): setUp() runs with
        asyncio.SelectorEventLoop being goloop.EventLoop for its duration.
    The first line of --out maps each such class to its variant,
    {"variants": {"module.C": "module.GoloopC"}}, so the parent can compare
    a variant's tests with the stock run's tests of C.
  * test.support resources are all disabled (no network, no cpu-heavy tests),
    as under regrtest without -u.

On --loop goloop every loop that asyncio itself creates is a goloop loop:
asyncio.set_event_loop_policy(goloop.EventLoopPolicy()) at start, and
asyncio.DefaultEventLoopPolicy is goloop.EventLoopPolicy (from 3.14 the
private asyncio.unix_events._DefaultEventLoopPolicy it aliases), because
every test module's tearDownModule (and many tests) call
set_event_loop_policy(None), after which asyncio instantiates the default
policy class again.  So
asyncio.new_event_loop(), asyncio.run(), asyncio.Runner and
unittest.IsolatedAsyncioTestCase all get goloop loops.  Loops the tests build
otherwise stay what they are (subclasses or mocks of BaseEventLoop /
BaseSelectorEventLoop), except test_utils.TestLoop, the virtual-clock loop of
test_tasks and test_futures, which gets goloop's task-step routing mixed in
(goloop._steps.GoroutineSteps).  The driver
counts the goloop loops created (per test and in total) and the task steps
that ran on goroutines, and checks with asyncio.run() before the suite that
task steps run on goroutines, so the parent can check that goloop really ran.
"""
import argparse
import faulthandler
import fnmatch
import importlib
import inspect
import json
import os
import sys
import time
import traceback
import unittest

# The stdlib's `test` package must be the one found, never a directory named
# test next to this file or in the current directory.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]
# tests/suite_runner.py (what this shares with tests/aiohttp_suite's plugin),
# from tests/ put last on sys.path for the import only.
_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(_TESTS)
import suite_runner  # noqa: E402

sys.path.remove(_TESTS)

PACKAGE = "test.test_asyncio"
STOCK_LOOP_CALL = "asyncio.SelectorEventLoop("
VARIANT_TO = "Goloop"

# goroutine_steps stays None if this goloop has no seam to count them at.
_counters = {"goloop_loops": 0, "goroutine_steps": None}


def _detail(err):
    """A short text for an exc_info triple or a skip reason."""
    if isinstance(err, str):
        return err
    if err is None:
        return ""
    text = "".join(traceback.format_exception(*err))
    if len(text) > 6000:
        text = text[:2000] + "\n[...]\n" + text[-4000:]
    return text


_RANK = {"skip": 0, "xfail": 1, "pass": 2, "xpass": 3, "fail": 4, "error": 5}


class Recorder(unittest.TestResult):
    """Writes one JSON line per test (and per fixture error) to `out`."""

    def __init__(self, out, timeout):
        super().__init__()
        self.out = out
        self.timeout = timeout
        self.counts = {k: 0 for k in _RANK}
        self._current = None

    def _write(self, record):
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def _note(self, test, outcome, detail=""):
        test = getattr(test, "test_case", test)    # a subTest's own test
        if self._current is None or self._current["id"] != test.id():
            # outside startTest/stopTest: setUpClass, tearDownModule, ...
            # (_ErrorHolder), or a skipped test (3.12+ skips before startTest)
            record = {"id": test.id(), "outcome": outcome, "seconds": 0.0,
                      "detail": _detail(detail), "goloop_loops": 0}
            if not isinstance(test, unittest.TestCase):
                record["fixture"] = True
            self._write(record)
            self.counts[outcome] += 1
            return
        cur = self._current
        if cur["outcome"] is None or _RANK[outcome] > _RANK[cur["outcome"]]:
            cur["outcome"] = outcome
        if detail:
            cur["detail"] = (cur["detail"] + "\n" + _detail(detail)).strip()

    def startTest(self, test):
        super().startTest(test)
        self._write({"start": test.id()})
        self._current = {"id": test.id(), "outcome": None, "detail": "",
                         "t0": time.monotonic(), "loops0": _counters["goloop_loops"]}
        faulthandler.dump_traceback_later(self.timeout, exit=True)

    def stopTest(self, test):
        faulthandler.cancel_dump_traceback_later()
        cur = self._current
        self._current = None
        if cur is None:         # skipped without startTest, already written
            super().stopTest(test)
            return
        outcome = cur["outcome"] or "pass"
        self.counts[outcome] += 1
        self._write({"id": cur["id"], "outcome": outcome,
                     "seconds": round(time.monotonic() - cur["t0"], 3),
                     "detail": cur["detail"],
                     "goloop_loops": _counters["goloop_loops"] - cur["loops0"]})
        super().stopTest(test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._note(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._note(test, "fail", err)

    def addError(self, test, err):
        super().addError(test, err)
        self._note(test, "error", err)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._note(test, "skip", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._note(test, "xfail")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._note(test, "xpass")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"
            self._note(test, kind, f"subtest {subtest.id()}:\n{_detail(err)}")


def install_goloop():
    """Make asyncio create goloop loops (suite_runner.install_goloop); count
    them and the goroutine steps."""
    goloop = suite_runner.install_goloop(_counters)
    # CPython's tests live in the standard library's `test` package, which
    # goloop takes for a library's code and preempts only at an await: the
    # suite under test is the application here, preempted as its own code.
    goloop.preemptible_packages("test")

    # Task steps on goroutines: count them where goloop hands a step to a
    # worker goroutine, if this goloop still has that seam (diagnostics only;
    # goloop.stats()['goroutines_started'] is checked regardless).
    steps = getattr(goloop, "_steps", None)
    run_on_goroutine = getattr(steps, "run_on_goroutine", None)
    if callable(run_on_goroutine):
        def counting_run(handle, *rest, _run=run_on_goroutine):
            _counters["goroutine_steps"] += 1
            return _run(handle, *rest)

        steps.run_on_goroutine = counting_run
        _counters["goroutine_steps"] = 0

    # CPython's virtual-clock test loop (test_tasks, test_futures, ...) gets
    # goloop's task-step routing mixed in, so those tests run their task
    # steps on goroutines too.
    from test.test_asyncio import utils as test_utils

    class GoloopTestLoop(goloop._steps.GoroutineSteps, test_utils.TestLoop):
        pass

    GoloopTestLoop.__name__ = GoloopTestLoop.__qualname__ = "TestLoop"
    test_utils.TestLoop = GoloopTestLoop
    return goloop


def _builds_stock_loop(cls, method):
    func = vars(cls).get(method)
    if not callable(func):
        return False
    try:
        return STOCK_LOOP_CALL in inspect.getsource(func)
    except (OSError, TypeError):
        return False


def variant_name(name):
    for word in ("EPoll", "Selector"):
        if word in name:
            return name.replace(word, VARIANT_TO, 1)
    return VARIANT_TO + name


def loop_classes(module):
    """The module's TestCase classes that build the stock loop by class:
    (variants {name: (class, how)}, dropped {name}), how being
    create_event_loop, new_loop or setUp."""
    variants, dropped = {}, set()
    per_loop = {}
    for name, obj in sorted(vars(module).items()):
        if not (isinstance(obj, type) and issubclass(obj, unittest.TestCase)
                and obj.__module__ == module.__name__ and obj.__name__ == name):
            continue
        if name.endswith("EventLoopTests") and _builds_stock_loop(obj, "create_event_loop"):
            per_loop[name] = obj
        elif _builds_stock_loop(obj, "new_loop"):
            variants[name] = (obj, "new_loop")
        elif _builds_stock_loop(obj, "setUp"):
            variants[name] = (obj, "setUp")
    epoll = [n for n in per_loop if n.startswith("EPoll")]
    if epoll:
        variants[epoll[0]] = (per_loop[epoll[0]], "create_event_loop")
        dropped = set(per_loop) - {epoll[0]}
    return variants, dropped


def make_goloop_variant(base, how, goloop):
    name = variant_name(base.__name__)
    ns = {
        "__module__": base.__module__,
        "__qualname__": name,
        "__doc__": f"{base.__name__} on goloop loops (conformance runner, {how})",
    }
    if how in ("create_event_loop", "new_loop"):
        def make_loop(self):
            return goloop.new_event_loop()

        ns[how] = make_loop
    else:
        def setUp(self):
            import asyncio

            saved = asyncio.SelectorEventLoop
            asyncio.SelectorEventLoop = goloop.EventLoop
            try:
                base.setUp(self)
            finally:
                asyncio.SelectorEventLoop = saved
            loop = getattr(self, "loop", None)
            if not isinstance(loop, goloop.EventLoop):
                raise AssertionError(f"conformance runner: {base.__name__}.setUp() "
                                     f"did not build its loop on goloop: {loop!r}")

        ns["setUp"] = setUp
    return type(base)(name, (base,), ns)


def _iter_tests(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _iter_tests(item)
        else:
            yield item


def load_selection(loop, goloop, patterns):
    """(tests, extra records for modules that could not be imported or skip
    themselves, {stock class: goloop variant class} as "module.Class")."""
    from test import support

    support.use_resources = []          # nothing beyond the defaults, no network
    extra = []
    try:
        package = importlib.import_module(PACKAGE)
    except unittest.SkipTest as e:
        return [], [(PACKAGE, "skip", str(e))], {}
    pkg_dir = os.path.dirname(package.__file__)
    loader = unittest.TestLoader()
    globs = [p if "*" in p else f"*{p}*" for p in patterns]
    mapping = {}

    def selected(tid):
        # -k matches the id on either loop (a variant or the class it stands
        # for), so both runs select the same tests.
        names = [tid]
        parts = tid.split(".")
        cls = ".".join(parts[:4])
        for a, b in mapping.items():
            if cls == a:
                names.append(b + tid[len(a):])
            elif cls == b:
                names.append(a + tid[len(b):])
        return not globs or any(fnmatch.fnmatchcase(n, g) for n in names for g in globs)

    tests = []
    for filename in sorted(os.listdir(pkg_dir)):
        if not (filename.startswith("test") and filename.endswith(".py")):
            continue
        modname = f"{PACKAGE}.{filename[:-3]}"
        try:
            module = importlib.import_module(modname)
        except unittest.SkipTest as e:
            if selected(f"{modname} (module)"):
                extra.append((f"{modname} (module)", "skip", str(e)))
            continue
        except Exception:
            if selected(f"{modname} (module)"):
                extra.append((f"{modname} (module)", "error", traceback.format_exc()))
            continue
        variants, dropped = loop_classes(module)
        drop = {f"{modname}.{name}." for name in dropped}
        for name, (cls, how) in variants.items():
            mapping[f"{modname}.{name}"] = f"{modname}.{variant_name(name)}"
            if loop == "goloop":
                drop.add(f"{modname}.{name}.")
                variant = make_goloop_variant(cls, how, goloop)
                setattr(module, variant.__name__, variant)
        for test in _iter_tests(loader.loadTestsFromModule(module)):
            tid = test.id()
            if any(tid.startswith(d) for d in drop) or not selected(tid):
                continue
            tests.append(test)
    return tests, extra, mapping


def _read_ids(path):
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return {line.strip() for line in f if line.strip()}


def probe_goloop(goloop):
    """asyncio.run() here must give a goloop loop running task steps on
    goroutines; returns a description, exits if not."""
    import asyncio

    try:
        probe = suite_runner.probe_goloop(goloop, "asyncio.run")
    except RuntimeError as e:
        raise SystemExit(f"conformance driver: {e}") from None
    set_policy = getattr(asyncio.events, "_set_event_loop_policy", asyncio.set_event_loop_policy)
    set_policy(goloop._api.EventLoopPolicy())
    return probe


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loop", choices=("goloop", "stock"), required=True)
    ap.add_argument("--out", required=True, help="JSON-lines file to append to")
    ap.add_argument("--exclude", help="file of test ids (one a line) not to run")
    ap.add_argument("--only", help="file of test ids (one a line): run only these")
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="run only tests whose id matches (unittest -k)")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds one test may take before the run is ended")
    ap.add_argument("--list", action="store_true", help="only print the selected ids")
    args = ap.parse_args(argv)

    faulthandler.enable()
    goloop = install_goloop() if args.loop == "goloop" else None
    probe = probe_goloop(goloop) if goloop is not None else None
    tests, extra, mapping = load_selection(args.loop, goloop, args.patterns)
    if args.list:
        for t in tests:
            print(t.id())
        return 0
    exclude = _read_ids(args.exclude) if args.exclude else set()
    if args.only:
        only = _read_ids(args.only)
        exclude |= {t.id() for t in tests if t.id() not in only}
        extra = [e for e in extra if e[0] in only]
    # The suite drops each test after running it (TestSuite._cleanup); keep
    # no other reference, or the finished tests and everything they hold stay
    # alive and every gc.collect() (some tests call it hundreds of times)
    # walks them.
    suite = unittest.TestSuite(t for t in tests if t.id() not in exclude)
    del tests

    with open(args.out, "a") as out:
        result = Recorder(out, args.timeout)
        result._write({"variants": mapping, "selection": [t.id() for t in suite]})
        for tid, outcome, detail in extra:
            if tid not in exclude:
                result._write({"id": tid, "outcome": outcome, "seconds": 0.0,
                               "detail": detail, "goloop_loops": 0, "fixture": True})
        t0 = time.monotonic()
        suite(result)
        counters = dict(_counters)
        counters["seconds"] = round(time.monotonic() - t0, 1)
        counters["tests_run"] = result.testsRun
        if goloop is not None:
            counters["goloop_stats"] = goloop.stats()
        result._write({"done": True, "loop": args.loop, "probe": probe,
                       "python": sys.version.split()[0], "counters": counters})
    print(f"conformance driver ({args.loop}, Python {sys.version.split()[0]}): "
          f"{result.testsRun} tests in {counters['seconds']} s; " +
          ", ".join(f"{k} {v}" for k, v in result.counts.items() if v) +
          (f"; goloop loops {counters['goloop_loops']}, goroutine steps "
           f"{counters['goroutine_steps']}, goroutines started "
           f"{counters['goloop_stats']['goroutines_started']}" if goloop else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
