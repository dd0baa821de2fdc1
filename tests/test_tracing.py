"""Tracing, profiling, sys.monitoring and coverage see code on goroutines,
including code that continues after park() when tracing was switched on (or
off) while the goroutine was parked.

3.11 has a per-stack flag (cframe->use_tracing) the glue carries across
switches.  3.12+ instrument bytecode: switching events on instruments the code
of the frames executing at that moment, found by walking the running stack
only; the glue catches up suspended stacks when they are resumed
(pystate.h gl_pystate_instrument_stack).
"""
import inspect
import json
import sys

import pytest

import goloop

pytestmark = pytest.mark.usefixtures("no_leftover_goroutines")

HERE = __file__
needs_monitoring = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="sys.monitoring is new in 3.12")


def line_of(func, marker):
    lines, start = inspect.getsourcelines(func)
    hits = [start + i for i, text in enumerate(lines) if marker in text]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


class Recorder:
    """A sys.settrace/setprofile function recording this file's events as
    (function name, event, line)."""

    def __init__(self):
        self.events = []

    def __call__(self, frame, event, arg):
        if frame.f_code.co_filename == HERE:
            self.events.append((frame.f_code.co_name, event, frame.f_lineno))
        return self

    def of(self, name, kind=None):
        return [(e, ln) for n, e, ln in self.events
                if n == name and (kind is None or e == kind)]


@pytest.fixture
def tracing():
    """Run with sys.settrace/setprofile restored afterwards."""
    old_trace, old_profile = sys.gettrace(), sys.getprofile()
    yield
    sys.settrace(old_trace)
    sys.setprofile(old_profile)


def callee(x):
    return x + 1                                  # CALLEE


def parks_twice():
    a = 1                                         # PT-1
    b = goloop.park(a)                            # PT-PARK1
    c = callee(b)                                 # PT-2
    d = goloop.park(c)                            # PT-PARK2
    return d                                      # PT-3


def caller_of_parks_twice():
    r = parks_twice()                             # CALLER-1
    r += 1                                        # CALLER-2
    return r                                      # CALLER-3


def test_settrace_on_before_start(tracing):
    rec = Recorder()
    sys.settrace(rec)
    g = goloop.Goroutine(caller_of_parks_twice)
    assert g.resume() == 1
    assert g.resume(10) == 11
    assert g.resume(20) == 21
    sys.settrace(None)
    L = lambda m: line_of(parks_twice, m)
    lines = [ln for e, ln in rec.of("parks_twice", "line")]
    assert lines == [L("PT-1"), L("PT-PARK1"), L("PT-2"), L("PT-PARK2"), L("PT-3")]
    assert rec.of("parks_twice", "return") == [("return", L("PT-3"))]
    assert rec.of("callee") == [("call", line_of(callee, "def callee")),
                                ("line", line_of(callee, "CALLEE")),
                                ("return", line_of(callee, "CALLEE"))]
    C = lambda m: line_of(caller_of_parks_twice, m)
    assert [ln for e, ln in rec.of("caller_of_parks_twice", "line")] == [
        C("CALLER-1"), C("CALLER-2"), C("CALLER-3")]


def test_settrace_switched_on_while_parked(tracing):
    g = goloop.Goroutine(caller_of_parks_twice)
    assert g.resume() == 1
    rec = Recorder()
    sys.settrace(rec)
    # A debugger switching tracing on sets f_trace on the frames that are
    # already running, here those of the parked goroutine.
    f = g.frame
    while f is not None:
        f.f_trace = rec
        f = f.f_back
    assert g.resume(10) == 11
    assert g.resume(20) == 21
    sys.settrace(None)
    L = lambda m: line_of(parks_twice, m)
    C = lambda m: line_of(caller_of_parks_twice, m)
    assert [ln for e, ln in rec.of("parks_twice", "line")] == [L("PT-2"), L("PT-PARK2"), L("PT-3")]
    assert rec.of("parks_twice", "return") == [("return", L("PT-3"))]
    assert [e for e, ln in rec.of("callee")] == ["call", "line", "return"]
    assert [ln for e, ln in rec.of("caller_of_parks_twice", "line")] == [C("CALLER-2"), C("CALLER-3")]
    assert rec.of("caller_of_parks_twice", "return") == [("return", C("CALLER-3"))]


def test_settrace_switched_on_while_parked_traces_new_calls(tracing):
    # Without f_trace on the parked frames (as for any frame already running
    # when sys.settrace is called), calls made after park() are traced.
    g = goloop.Goroutine(parks_twice)
    g.resume()
    rec = Recorder()
    sys.settrace(rec)
    g.resume(1)
    g.resume(2)
    sys.settrace(None)
    assert [e for e, ln in rec.of("callee")] == ["call", "line", "return"]
    assert rec.of("parks_twice", "line") == []


def test_settrace_switched_off_while_parked(tracing):
    rec = Recorder()
    sys.settrace(rec)
    g = goloop.Goroutine(parks_twice)
    g.resume()
    sys.settrace(None)
    count = len(rec.events)
    assert rec.of("parks_twice", "line")
    g.resume(1)
    g.resume(2)
    assert len(rec.events) == count, rec.events[count:]


def test_settrace_switched_on_inside_goroutine_reaches_parent(tracing):
    rec = Recorder()
    me = None

    def switch_on():
        sys.settrace(rec)
        me.f_trace = rec          # the parent's running frame, as a debugger would
        goloop.park("on")

    g = goloop.Goroutine(switch_on)
    me = sys._getframe()
    assert g.resume() == "on"
    after = sys._getframe().f_lineno      # a line run after the switch back
    sys.settrace(None)
    g.resume()
    lines = [ln for e, ln in rec.of(me.f_code.co_name, "line")]
    assert after in lines, rec.events


def test_setprofile_switched_on_while_parked(tracing):
    g = goloop.Goroutine(caller_of_parks_twice)
    g.resume()
    rec = Recorder()
    sys.setprofile(rec)
    g.resume(1)
    g.resume(2)
    sys.setprofile(None)
    events = [(n, e) for n, e, ln in rec.events]
    # The calls made after resume, and the returns of the frames that were
    # parked when the profiler was switched on.
    assert ("callee", "call") in events and ("callee", "return") in events
    assert events.index(("parks_twice", "return")) < events.index(("caller_of_parks_twice", "return"))


# ---- sys.monitoring (3.12+) ------------------------------------------------------------


@pytest.fixture
def monitoring_tool():
    mon = sys.monitoring
    tool = next(i for i in range(6) if mon.get_tool(i) is None)
    mon.use_tool_id(tool, "goloop-tests")
    yield tool
    mon.set_events(tool, 0)
    for event in (mon.events.LINE, mon.events.PY_RETURN):
        mon.register_callback(tool, event, None)
    mon.free_tool_id(tool)


@needs_monitoring
def test_monitoring_events_switched_on_while_parked(monitoring_tool):
    mon = sys.monitoring
    lines, returns = [], []
    mon.register_callback(monitoring_tool, mon.events.LINE,
                          lambda code, line: lines.append((code.co_name, line))
                          if code.co_filename == HERE else None)
    mon.register_callback(monitoring_tool, mon.events.PY_RETURN,
                          lambda code, off, val: returns.append(code.co_name)
                          if code.co_filename == HERE else None)
    g = goloop.Goroutine(caller_of_parks_twice)
    g.resume()
    mon.set_events(monitoring_tool, mon.events.LINE | mon.events.PY_RETURN)
    g.resume(1)
    g.resume(2)
    mon.set_events(monitoring_tool, 0)
    L = lambda m: line_of(parks_twice, m)
    C = lambda m: line_of(caller_of_parks_twice, m)
    assert [ln for n, ln in lines if n == "parks_twice"] == [L("PT-2"), L("PT-PARK2"), L("PT-3")]
    assert [ln for n, ln in lines if n == "caller_of_parks_twice"] == [C("CALLER-2"), C("CALLER-3")]
    assert [n for n in returns if n != "<lambda>"] == [
        "callee", "parks_twice", "caller_of_parks_twice"]


@needs_monitoring
def test_monitoring_switched_on_inside_goroutine_reaches_parent(monitoring_tool):
    mon = sys.monitoring
    lines = []
    mon.register_callback(monitoring_tool, mon.events.LINE,
                          lambda code, line: lines.append((code.co_name, line))
                          if code.co_filename == HERE else None)

    def switch_on():
        mon.set_events(monitoring_tool, mon.events.LINE)

    goloop.Goroutine(switch_on).resume()
    after = sys._getframe().f_lineno      # a line run after the switch back
    mon.set_events(monitoring_tool, 0)
    me = "test_monitoring_switched_on_inside_goroutine_reaches_parent"
    assert (me, after) in lines, lines


@needs_monitoring
def test_monitoring_catch_up_with_many_parked_goroutines(monitoring_tool):
    # Every parked goroutine catches up when it is resumed, whichever order.
    mon = sys.monitoring
    seen = []
    mon.register_callback(monitoring_tool, mon.events.LINE,
                          lambda code, line: seen.append(line)
                          if code.co_name == "parks_twice" else None)
    gs = [goloop.Goroutine(parks_twice) for _ in range(20)]
    for g in gs:
        g.resume()
    mon.set_events(monitoring_tool, mon.events.LINE)
    for g in reversed(gs):
        g.resume(1)
    for g in gs:
        g.resume(2)
    mon.set_events(monitoring_tool, 0)
    L = lambda m: line_of(parks_twice, m)
    assert sorted(seen) == sorted([L("PT-2"), L("PT-PARK2"), L("PT-3")] * 20)
    assert all(mon.get_tool(i) != "goloop" for i in range(6))


def recursive_parker(n):
    if n == 0:
        goloop.park("bottom")
    else:
        recursive_parker(n - 1)
    return n                                      # REC-AFTER


@needs_monitoring
def test_monitoring_catch_up_for_deep_recursion(monitoring_tool):
    mon = sys.monitoring
    seen = []
    mon.register_callback(monitoring_tool, mon.events.LINE,
                          lambda code, line: seen.append(line)
                          if code is recursive_parker.__code__ else None)
    g = goloop.Goroutine(lambda: recursive_parker(60))
    assert g.resume() == "bottom"
    mon.set_events(monitoring_tool, mon.events.LINE)
    assert g.resume() == 60
    mon.set_events(monitoring_tool, 0)
    # Every one of the 61 suspended frames reports its line after the call.
    assert seen == [line_of(recursive_parker, "REC-AFTER")] * 61


@needs_monitoring
def test_monitoring_with_every_tool_id_taken(monitoring_tool):
    # The catch-up borrows a free tool id; with none free it gives up
    # quietly (those frames then miss events, as without it) and disturbs
    # nothing: no exception, no tool renamed.
    mon = sys.monitoring
    taken = [i for i in range(6) if mon.get_tool(i) is None]
    for i in taken:
        mon.use_tool_id(i, f"filler-{i}")
    try:
        names = [mon.get_tool(i) for i in range(6)]
        seen = []
        mon.register_callback(monitoring_tool, mon.events.LINE,
                              lambda code, line: seen.append(line)
                              if code is parks_twice.__code__ else None)
        g = goloop.Goroutine(parks_twice)
        g.resume()
        mon.set_events(monitoring_tool, mon.events.LINE)
        assert g.resume(1) == 2
        assert g.resume(3) == 3
        mon.set_events(monitoring_tool, 0)
        assert [mon.get_tool(i) for i in range(6)] == names
        assert sys.exc_info() == (None, None, None)
    finally:
        for i in taken:
            mon.free_tool_id(i)


@needs_monitoring
def test_code_run_by_the_catch_up_cannot_steal_a_switch_result(monitoring_tool, monkeypatch):
    # The catch-up after a switch calls sys.monitoring functions, so Python
    # code may run inside it (here: a wrapper around use_tool_id, which
    # resumes the very goroutine whose resume() is returning).  That resume()
    # must still return what the goroutine parked with.
    mon = sys.monitoring
    state = {"armed": False, "nested": None}
    real_use_tool_id = mon.use_tool_id

    def use_tool_id(tool, name):
        if state["armed"]:
            state["armed"] = False
            state["nested"] = g.resume("from the catch-up")
        return real_use_tool_id(tool, name)

    def body():
        mon.set_events(monitoring_tool, mon.events.LINE)   # the parent is now stale
        state["armed"] = True
        got = goloop.park("parked")
        return ("end", got)

    monkeypatch.setattr(mon, "use_tool_id", use_tool_id)
    g = goloop.Goroutine(body)
    try:
        result = g.resume()
    finally:
        mon.set_events(monitoring_tool, 0)
    assert state["nested"] == ("end", "from the catch-up")
    assert result == "parked"
    assert g.status == "finished"


# ---- coverage ----------------------------------------------------------------------------

COVERED_SCRIPT = '''\
import goloop

def helper(x):
    return x * 2                      # MARK helper

def body(start):
    a = start + 1                     # MARK before
    b = goloop.park(a)                # MARK park
    c = helper(b)                     # MARK after-1
    if c > 0:                         # MARK after-2
        c += 1                        # MARK after-3
    return c                          # MARK after-4

def started_later():
    return goloop.park("later") + 1   # MARK later

g = goloop.Goroutine(lambda: body(1))
h = goloop.Goroutine(started_later)
v = g.resume()
h.resume()
assert g.resume(v) == 5
assert h.resume(1) == 2
'''

STARTED_WHILE_PARKED_SCRIPT = '''\
import sys, goloop, coverage
cov = coverage.Coverage(data_file=sys.argv[1], include=[__file__])

def helper(x):
    return x * 2                      # MARK helper

def goroutine_body():
    b = goloop.park(1)
    c = helper(b)                     # MARK g-1
    if c > 0:                         # MARK g-2
        c += 1                        # MARK g-3
    return c                          # MARK g-4

def plain_body():
    cov.start()                       # coverage starts in a running frame
    c = helper(3)                     # MARK p-1
    if c > 0:                         # MARK p-2
        c += 1                        # MARK p-3
    return c                          # MARK p-4

def fresh():
    return 1                          # MARK fresh

g = goloop.Goroutine(goroutine_body)
g.resume()
cov.start()                           # coverage starts while g is parked
g.resume(5)
goloop.Goroutine(fresh).resume()
cov.stop()
plain_body()
cov.stop()
cov.save()
'''


def marks(script):
    out = {}
    for i, text in enumerate(script.splitlines(), 1):
        if "# MARK " in text:
            out[text.split("# MARK ")[1].strip()] = i
    return out


CORES = ["default", pytest.param("sysmon", marks=needs_monitoring)]


def coverage_json(run_module, tmp_path, data_file):
    proc = run_module("coverage", "json", f"--data-file={data_file}",
                      "-o", str(tmp_path / "cov.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((tmp_path / "cov.json").read_text())


@pytest.mark.parametrize("core", CORES)
def test_coverage_run_measures_goroutine_lines(run_module, tmp_path, core):
    pytest.importorskip("coverage")
    script = tmp_path / "covered.py"
    script.write_text(COVERED_SCRIPT)
    env = {"COVERAGE_CORE": core} if core != "default" else {}
    proc = run_module("coverage", "run", "--data-file=.cov", str(script),
                      cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = coverage_json(run_module, tmp_path, ".cov")
    entry = next(v for k, v in report["files"].items() if k.endswith("covered.py"))
    executed = set(entry["executed_lines"])
    want = marks(COVERED_SCRIPT)
    missing = {name: ln for name, ln in want.items() if ln not in executed}
    assert not missing, (missing, sorted(executed))
    assert entry["missing_lines"] == []


@pytest.mark.parametrize("core", CORES)
def test_coverage_started_while_goroutine_parked(run_python, run_module, tmp_path, core):
    pytest.importorskip("coverage")
    script = tmp_path / "started.py"
    script.write_text(STARTED_WHILE_PARKED_SCRIPT)
    env = {"COVERAGE_CORE": core} if core != "default" else {}
    proc = run_python(
        "import runpy, sys; sys.argv[:] = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
        str(script), ".cov", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = coverage_json(run_module, tmp_path, ".cov")
    entry = next(v for k, v in report["files"].items() if k.endswith("started.py"))
    executed = set(entry["executed_lines"])
    m = marks(STARTED_WHILE_PARKED_SCRIPT)
    # Code called after coverage started is measured, on a goroutine too.
    assert m["helper"] in executed and m["fresh"] in executed, sorted(executed)
    # A frame that was already running when coverage started -- parked on a
    # goroutine, or running on the thread's own stack -- is measured alike.
    g_lines = [m[f"g-{i}"] in executed for i in range(1, 5)]
    p_lines = [m[f"p-{i}"] in executed for i in range(1, 5)]
    assert g_lines == p_lines, (sorted(executed), m)
