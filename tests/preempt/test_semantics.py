"""What preemption guarantees besides fairness: asyncio's own semantics.

current_task() stays true across a preemption; a task cancelled while
preempted gets CancelledError at its next await, not in the middle of its
computation; Ctrl-C stops a CPU hog as it does on asyncio; the
application's own SIGURG handler is still called and put back; signals
above SIGURG are still delivered while steps are parked in the SIGURG
handler; code that must not be interrupted is not (goloop.atomic(), frames
of asyncio, the import system, greenlets); options are checked like
asyncio's; a loop off the main thread warns and runs cooperatively; an
idle loop lets sysmon sleep.

Every test that relies on a preemption having happened checks the
`preemptions` counter, and every test that relies on one NOT happening
checks that the same code, unprotected, is preempted — so none passes
vacuously.  Time margins are wide (hundreds of ms against a 10 ms slice).
"""
import asyncio
import os
import signal
import sys
import sysconfig
import threading
import time
import types
import warnings

import pytest

import goloop

perf = time.perf_counter


def burn(seconds):
    """Pure-Python work for `seconds`, no await: a step the loop cannot
    interrupt unless it preempts."""
    end = perf() + seconds
    n = 0
    while perf() < end:
        n += 1
    return n


def run(main, **options):
    """Run main() on a new preempting goloop loop; (result, stats delta)."""
    before = goloop.stats()
    with asyncio.Runner(loop_factory=lambda: goloop.new_event_loop(**options)) as runner:
        result = runner.run(main())
    after = goloop.stats()
    return result, {k: after[k] - before[k] for k in ("preemptions", "preempt_declined", "steps")}


def test_current_task_stays_true_across_preemptions():
    async def hog(seen):
        me = asyncio.current_task()
        end = perf() + 0.3
        while perf() < end:
            burn(0.0002)    # mostly its own code: asyncio code is never preempted
            seen.add(asyncio.current_task() is me)

    async def ticker(seen):
        me = asyncio.current_task()
        for _ in range(20):
            await asyncio.sleep(0.005)
            seen.add(asyncio.current_task() is me)

    async def main():
        hog_seen, tick_seen = set(), set()
        await asyncio.gather(hog(hog_seen), ticker(tick_seen))
        return hog_seen, tick_seen

    (hog_seen, tick_seen), d = run(main)
    assert d["preemptions"] >= 5
    assert hog_seen == {True}
    assert tick_seen == {True}


def test_a_pure_python_task_is_preempted_like_a_c_task():
    """asyncio's pure-Python Task (tasks._PyTask) keeps its current-task
    state apart from the C Task's from 3.14; a hog of either kind is
    preempted, and a ticker beside it keeps ticking."""
    async def hog():
        burn(0.3)

    async def main():
        task = asyncio.tasks._PyTask(hog(), loop=asyncio.get_running_loop())
        ticks = 0
        while not task.done():
            await asyncio.sleep(0.005)
            ticks += 1
        await task
        return ticks

    ticks, d = run(main)
    assert d["preemptions"] >= 5, d
    assert ticks >= 10, ticks     # without preemption: 1 tick in 0.3 s


def test_cancel_while_preempted_lands_at_the_next_await():
    async def hog(progress):
        burn(0.3)                    # preempted many times, cancelled meanwhile
        progress.append("computed")
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            progress.append("cancelled at await")
            raise
        progress.append("not cancelled")

    async def main():
        progress = []
        task = asyncio.create_task(hog(progress))
        await asyncio.sleep(0.05)    # runs only because the hog is preempted
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return progress

    progress, d = run(main)
    assert d["preemptions"] >= 3
    assert progress == ["computed", "cancelled at await"]


@pytest.mark.parametrize("future_kind", ["CFuture", "PyFuture"])
@pytest.mark.parametrize("task_kind", ["CTask", "PyTask"])
def test_a_step_due_while_its_task_is_preempted_waits_for_that_step(task_kind, future_kind):
    """A step can schedule its task's next step before it ends: here the
    task awaits a Future whose add_done_callback (Python code) goes on
    computing after registering the task's wakeup, and is preempted there;
    meanwhile another task completes the future.  That wakeup must not run
    beside the parked step (on CPython's test suite it found the task's
    context still entered, and the task was never woken): it runs once the
    parked step has ended, as on stock asyncio, where steps of one task
    never overlap."""
    base = asyncio.Future if future_kind == "CFuture" else asyncio.futures._PyFuture
    events = []

    class ComputingFuture(base):
        def add_done_callback(self, fn, *, context=None):
            super().add_done_callback(fn, context=context)
            burn(0.05)               # preempted here, its wakeup registered
            events.append("registered")

    async def waiter(fut):
        value = await fut
        events.append("woken")
        return value

    async def completer(fut):
        await asyncio.sleep(0)
        fut.set_result(42)
        events.append("completed")

    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda loop, context: errors.append(context))
        task_type = asyncio.Task if task_kind == "CTask" else asyncio.tasks._PyTask
        fut = ComputingFuture(loop=loop)
        t1 = task_type(waiter(fut), loop=loop)
        t2 = task_type(completer(fut), loop=loop)
        # Not wait_for(): a task never woken would not even finish cancelling.
        done, _ = await asyncio.wait({t1, t2}, timeout=10)
        assert done == {t1, t2}, f"the waiter was never woken: {events}, {errors}"
        return t1.result(), errors

    before = goloop.stats()
    # Not asyncio.run(): its cleanup would wait forever for a task never woken.
    loop = goloop.new_event_loop(time_slice=0.002)
    try:
        value, errors = loop.run_until_complete(main())
    finally:
        loop.close()
    assert errors == []
    assert value == 42
    assert goloop.stats()["preemptions"] - before["preemptions"] >= 3
    assert events == ["completed", "registered", "woken"], events
    assert goloop.stats()["steps_held_back"] - before["steps_held_back"] >= 1


CTRL_C_SCRIPT = r"""
import asyncio, sys, time
import goloop

async def hog():
    end = time.perf_counter() + 60
    while time.perf_counter() < end:
        pass

async def main():
    print("ready", flush=True)
    await asyncio.create_task(hog())

factory = goloop.new_event_loop if sys.argv[1] == "goloop" else asyncio.new_event_loop
with asyncio.Runner(loop_factory=factory) as runner:
    runner.run(main())
"""


@pytest.mark.parametrize("kind", ["goloop", "asyncio"])
def test_ctrl_c_stops_a_cpu_hog_as_on_asyncio(tmp_path, kind):
    """Two Ctrl-C stop a program whose task computes for a minute: the first
    cancels the main task (it cannot take effect inside the hog's step), the
    second raises KeyboardInterrupt inside the computation — on both loops."""
    import subprocess

    script = tmp_path / "hog.py"
    script.write_text(CTRL_C_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(goloop.__file__)))
    p = subprocess.Popen([sys.executable, str(script), kind], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
    finally:
        p.kill()
    assert p.returncode != 0, err
    assert "KeyboardInterrupt" in err, err
    assert "Fatal" not in err and "Segmentation" not in err, err


def test_ctrl_c_landing_in_the_loops_own_code_ends_the_preempted_computation():
    """A KeyboardInterrupt raised in the loop's own code (here by the SIGINT
    handler, run in a plain callback, which runs at all only because the hog
    is preempted) goes into the preempted step, where stock asyncio would
    have raised it since that computation would have been running, and ends
    it.  Left parked, the step would run on for as long as the computation
    takes when the program shuts down (a Runner cancels the remaining tasks
    and runs the loop until they finish) — the test above hung on that, now
    and then."""
    where = []

    async def hog():
        try:
            burn(30)
        except KeyboardInterrupt:
            where.append("hog")
            raise

    before = goloop.stats()["preemptions"]
    loop = goloop.new_event_loop()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        task = loop.create_task(hog())
        loop.call_later(0.2, signal.raise_signal, signal.SIGINT)
        started = perf()
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(task)
        elapsed = perf() - started
    finally:
        signal.signal(signal.SIGINT, previous)
        loop.close()
    assert goloop.stats()["preemptions"] - before >= 5
    assert where == ["hog"]
    assert task.done() and isinstance(task.exception(), KeyboardInterrupt)
    assert elapsed < 10


def test_keyboard_interrupt_out_of_a_step_is_not_thrown_into_another():
    """One KeyboardInterrupt ends one computation: raised by a step itself,
    it comes out of the loop as on asyncio, and the other, preempted, step
    goes on when the loop runs again."""
    async def interrupted():
        burn(0.2)
        raise KeyboardInterrupt

    async def other():
        burn(0.5)
        return "finished"

    before = goloop.stats()["preemptions"]
    loop = goloop.new_event_loop()
    try:
        b = loop.create_task(other())
        a = loop.create_task(interrupted())
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(a)
        assert not b.done()
        assert loop.run_until_complete(b) == "finished"
    finally:
        loop.close()
    assert goloop.stats()["preemptions"] - before >= 5


def test_application_sigurg_handler_is_still_called_and_put_back():
    """Each SIGURG the application sends reaches its handler.  Like Go's
    (whose runtime also preempts with SIGURG), the handler may also be called
    for one of goloop's now and then, when goloop's signal lands just after
    the handler took its request; so only the calls made while no step ran
    long are counted exactly."""
    calls = []

    def app_handler(signum, frame):
        calls.append(signum)

    async def main():
        assert signal.getsignal(signal.SIGURG) is goloop._goloop._on_sigurg
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGURG)
            await asyncio.sleep(0.01)
        before_hog = list(calls)
        burn(0.1)                    # goloop's own SIGURGs meanwhile
        return before_hog

    old = signal.signal(signal.SIGURG, app_handler)
    try:
        before_hog, d = run(main)
        assert signal.getsignal(signal.SIGURG) is app_handler
    finally:
        signal.signal(signal.SIGURG, old)
    assert d["preemptions"] >= 3
    assert before_hog == [signal.SIGURG] * 3
    assert calls[:3] == before_hog and set(calls) == {signal.SIGURG}


def test_signals_above_sigurg_are_delivered_while_steps_are_preempted():
    """SIGWINCH (28) is handled after SIGURG (23) in CPython's batch; with a
    step parked inside the SIGURG handler it must still arrive, within a
    bounded delay (a loop iteration, here well under 0.5 s)."""
    assert signal.SIGWINCH > signal.SIGURG
    delays = []
    sent = []

    def on_winch(signum, frame):
        delays.append(perf() - sent[-1])

    def sender(stop):
        while not stop.is_set():
            sent.append(perf())
            os.kill(os.getpid(), signal.SIGWINCH)
            time.sleep(0.013)

    async def main():
        stop = threading.Event()
        t = threading.Thread(target=sender, args=(stop,))
        t.start()
        try:
            await asyncio.gather(hog_task(), hog_task())
        finally:
            stop.set()
            await asyncio.to_thread(t.join)

    async def hog_task():
        burn(0.6)

    old = signal.signal(signal.SIGWINCH, on_winch)
    try:
        _, d = run(main)
    finally:
        signal.signal(signal.SIGWINCH, old)
    assert d["preemptions"] >= 20
    assert len(delays) >= 10, f"only {len(delays)} SIGWINCH handled of {len(sent)} sent"
    assert max(delays) < 0.5, f"a SIGWINCH waited {max(delays):.3f} s"


def _ticks_during(body, **options):
    """Run body(mark) in a task step while a ticker task asks for a turn
    every millisecond; body calls mark() where the region under test starts
    and where it ends, from inside it.  Returns (turns the ticker got between
    the two marks, stats delta): more than 0 means the region was preempted.
    (A preemption after the region — the step still outlasts its slice — is
    allowed and not counted.)"""
    ticks = 0
    marks = []

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    async def main():
        t = asyncio.create_task(ticker())
        await asyncio.sleep(0.005)
        result = body(lambda: marks.append(ticks))
        if asyncio.iscoroutine(result):
            await result
        t.cancel()

    _, d = run(main, **options)
    assert len(marks) == 2, marks
    return marks[1] - marks[0], d


def unprotected(mark, seconds=0.15):
    mark()
    burn(seconds)
    mark()


def test_atomic_context_manager_is_not_preempted():
    def protected(mark):
        with goloop.atomic():
            unprotected(mark)

    assert _ticks_during(unprotected)[0] >= 5            # the control
    ticks, d = _ticks_during(protected)
    assert ticks == 0 and d["preempt_declined"] >= 3     # sysmon asked, in vain


def test_atomic_decorators_sync_and_async():
    assert _ticks_during(goloop.atomic(unprotected))[0] == 0
    assert _ticks_during(goloop.atomic()(unprotected))[0] == 0

    @goloop.atomic
    async def coro(mark):
        unprotected(mark, 0.1)
        await asyncio.sleep(0)        # an await still lets others run ...
        burn(0.05)                    # ... and the code after it is protected

    ticks, d = _ticks_during(coro)
    assert ticks == 0 and d["preempt_declined"] >= 3
    with pytest.raises(TypeError, match="decorates a callable"):
        goloop.atomic(42)


def test_frames_of_asyncio_and_the_import_system_are_not_preempted(tmp_path, monkeypatch):
    # The same loop, compiled as if it were asyncio's own code.
    ns = {"__name__": "asyncio.pretend", "burn": burn}
    exec("def unprotected(mark):\n    mark()\n    burn(0.15)\n    mark()\n", ns)
    ticks, d = _ticks_during(ns["unprotected"])
    assert ticks == 0 and d["preempt_declined"] >= 3

    # A module whose body computes while being imported (import lock held).
    marker = types.ModuleType("goloop_test_marker")
    monkeypatch.setitem(sys.modules, marker.__name__, marker)
    (tmp_path / "slow_import_mod.py").write_text(
        "import goloop_test_marker as m, time\n"
        "m.mark()\nend = time.perf_counter() + 0.15\n"
        "while time.perf_counter() < end:\n    pass\nm.mark()\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def import_it(mark):
        marker.mark = mark
        __import__("slow_import_mod")

    ticks, d = _ticks_during(import_it)
    assert ticks == 0 and d["preempt_declined"] >= 3


# What a library's code looks like to goloop: a file of an installed
# package (goloop._preempt.is_library_file).  The file need not exist.
LIBRARY_FILE = os.path.join(sysconfig.get_paths()["purelib"], "goloop_test_lib", "mod.py")
APPLICATION_FILE = os.path.join(os.path.dirname(__file__), "goloop_test_app.py")

# The shapes of code a step can be in, as a library and as the application
# would write them: `step(mark, app)` is called in the step (app: the
# application's coroutine function and callback, below).
SHAPES = """
import asyncio

def sync_burn(mark, app):
    unprotected(mark)

async def coroutine_burn(mark, app):
    unprotected(mark)

async def awaits_application(mark, app):
    await app.coroutine(mark)

async def calls_application_back(mark, app):
    app.callback(mark)

async def starts_eager_task(mark, app):
    task = asyncio.Task(app.coroutine(mark), loop=asyncio.get_running_loop(), eager_start=True)
    await task
"""


def compiled_as(filename):
    namespace = {"__name__": "goloop_test_shapes", "unprotected": unprotected}
    exec(compile(SHAPES, filename, "exec"), namespace)
    return types.SimpleNamespace(**namespace)


async def _application_coroutine(mark):
    unprotected(mark)


APPLICATION = types.SimpleNamespace(coroutine=_application_coroutine, callback=unprotected)


def _ticks_in_shape(filename, shape):
    step = getattr(compiled_as(filename), shape)
    return _ticks_during(lambda mark: step(mark, APPLICATION))


@pytest.mark.parametrize("shape, preempted", [
    ("sync_burn", False),               # the innermost frame a library's
    ("coroutine_burn", False),          # a library's coroutine between awaits
    ("awaits_application", True),       # at an await: the application's code above it
    ("calls_application_back", False),  # in the middle of a call (a loads= callback)
    pytest.param("starts_eager_task", False, marks=pytest.mark.skipif(
        sys.version_info < (3, 12), reason="eager tasks are new in 3.12")),
])
def test_a_librarys_code_is_preempted_only_where_it_awaits(shape, preempted):
    """Libraries rely on nothing else running between two of their awaits
    (aiohttp's StreamReader, asyncpg's protocol swap, anyio's task
    registration); goloop preempts a step only while every library frame
    in it waits at an await.  Each shape as the application's own code is
    preempted: the control."""
    assert _ticks_in_shape(APPLICATION_FILE, shape)[0] >= 5
    ticks, d = _ticks_in_shape(LIBRARY_FILE, shape)
    if preempted:
        assert ticks >= 5
    else:
        assert ticks == 0 and d["preempt_declined"] >= 3


def test_preemptible_packages_lets_an_installed_application_be_preempted(monkeypatch):
    monkeypatch.setattr(goloop._preempt, "_preemptible_packages", frozenset())
    monkeypatch.setattr(goloop._preempt, "_library_files", goloop._preempt._library_files)
    try:
        assert _ticks_in_shape(LIBRARY_FILE, "coroutine_burn")[0] == 0
        assert "goloop_test_lib" in goloop.preemptible_packages("goloop_test_lib")
        assert _ticks_in_shape(LIBRARY_FILE, "coroutine_burn")[0] >= 5
    finally:
        goloop._preempt._preemptible_packages = frozenset()
        goloop._preempt._library_files.clear()
    with pytest.raises(TypeError, match="package names"):
        goloop.preemptible_packages(b"x")
    with pytest.raises(ValueError, match="top-level package names"):
        goloop.preemptible_packages("a.b")


def test_library_files_are_the_standard_library_and_installed_packages():
    is_library = goloop._preempt.is_library_file
    assert is_library(asyncio.__file__) and is_library(os.__file__)
    assert is_library(pytest.__file__)                  # site-packages
    assert is_library(LIBRARY_FILE)
    assert not is_library(__file__) and not is_library(APPLICATION_FILE)
    assert is_library("<frozen runpy>")
    assert not is_library("<string>") and not is_library("<stdin>")


def test_the_script_being_run_is_the_applications_even_when_installed(run_python):
    """`python -m pkg.module` of an installed package: its code is the
    application's (the demo runs so, from its virtualenv's site-packages)."""
    code = (
        "import goloop._preempt as p, sys, types, os, sysconfig\n"
        "installed = os.path.join(sysconfig.get_paths()['purelib'], 'pkg', 'server.py')\n"
        "before = p.is_library_file(installed)\n"
        "sys.modules['__main__'].__file__ = installed\n"
        "print(before, p.is_library_file(installed))\n")
    r = run_python(code)
    assert r.returncode == 0 and r.stdout.split() == ["True", "False"], (r.stdout, r.stderr)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in 3.12")
def test_an_eager_tasks_first_step_is_preempted_like_any_step():
    """The application's eager task: its first step runs inside
    create_task(), and current_task() is that task, which is the one to
    leave while the step is parked."""
    seen = []

    async def eager(mark):
        seen.append(asyncio.current_task())
        unprotected(mark)
        seen.append(asyncio.current_task())

    async def start(mark):
        task = asyncio.Task(eager(mark), loop=asyncio.get_running_loop(), eager_start=True)
        await task
        return task

    ticks, d = _ticks_during(start)
    assert ticks >= 5 and d["preemptions"] >= 5
    assert len(seen) == 2 and seen[0] is seen[1] is not None


def test_a_step_inside_a_child_greenlet_is_not_preempted():
    greenlet = pytest.importorskip("greenlet")
    ticks, d = _ticks_during(lambda mark: greenlet.greenlet(lambda: unprotected(mark)).switch())
    assert ticks == 0 and d["preempt_declined"] >= 3


def test_preempt_false_and_time_slice():
    assert _ticks_during(unprotected, preempt=False)[0] == 0
    coarse = _ticks_during(lambda mark: unprotected(mark, 0.3), time_slice=0.1)[1]["preemptions"]
    fine = _ticks_during(lambda mark: unprotected(mark, 0.3), time_slice=0.002)[1]["preemptions"]
    assert 1 <= coarse <= 4
    assert fine >= 20


@pytest.mark.parametrize("value, exc", [
    ("10ms", TypeError), (0, ValueError), (-1, ValueError), (float("nan"), ValueError),
    (1e-9, ValueError), (True, TypeError), (7200, ValueError),
])
def test_bad_time_slice(value, exc):
    with pytest.raises(exc, match="time_slice"):
        goloop.new_event_loop(time_slice=value)
    coro = asyncio.sleep(0)
    with pytest.raises(exc, match="time_slice"):
        goloop.run(coro, time_slice=value)
    coro.close()


def test_time_slice_environment_variable(run_python):
    code = "import goloop; l = goloop.new_event_loop(); print(l._time_slice); l.close()"
    r = run_python(code, env={"GOLOOP_TIME_SLICE": "5ms"})
    assert r.returncode == 0 and float(r.stdout) == pytest.approx(0.005), r.stderr
    r = run_python(code, env={"GOLOOP_TIME_SLICE": "fast"})
    assert r.returncode != 0 and "GOLOOP_TIME_SLICE='fast' is not a duration" in r.stderr


def _off_the_main_thread():
    goloop._preempt._warned_thread = False
    out = {}

    def in_thread():
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            out["default"] = _ticks_during(unprotected)[0]
            out["default warnings"] = [x for x in w if issubclass(x.category, goloop.PreemptionWarning)]
            out["first"] = _ticks_during(unprotected, time_slice=0.005)[0]
            out["second"] = _ticks_during(unprotected, preempt=True)[0]
        out["warnings"] = [x for x in w if issubclass(x.category, goloop.PreemptionWarning)]

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    return out


def test_loop_off_the_main_thread_is_preempted_without_a_warning():
    # (3.11 too, through the tracer thread's trace function: preempt.c)
    out = _off_the_main_thread()
    assert out["default"] > 0 and out["first"] > 0 and out["second"] > 0, out
    assert out["default warnings"] == [] and out["warnings"] == []


@pytest.mark.parametrize("kind", ["goloop", "asyncio"])
def test_debug_mode_reports_a_slow_step_with_its_whole_time_even_when_preempted(kind, caplog):
    """asyncio's debug mode warns of a callback or task step that ran
    slow_callback_duration or more.  A 0.3 s step preempted into 10 ms
    slices is one step of 0.3 s, reported once, when it finishes — as
    stock asyncio, which never preempts, reports it."""
    async def hog():
        burn(0.3)

    async def main():
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.2
        await asyncio.gather(hog(), asyncio.sleep(0.01))

    before = goloop.stats()["preemptions"]
    with caplog.at_level("WARNING", logger="asyncio"):
        if kind == "goloop":
            goloop.run(main(), debug=True)
        else:
            asyncio.run(main(), debug=True)
    slow = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Executing")]
    if kind == "goloop":
        assert goloop.stats()["preemptions"] - before >= 5
    assert len(slow) == 1, slow
    assert ".hog() done" in slow[0], slow
    took = float(slow[0].rsplit(" took ", 1)[1].split()[0])
    assert 0.25 <= took < 3, slow


def test_sysmon_sleeps_while_the_loop_is_idle():
    """Idle for 1 s: a sysmon that kept its 10 ms rhythm would wake ~100
    times; one that sleeps until the loop's poll ends wakes a few times around
    the poll's start and end."""
    async def main():
        await asyncio.sleep(0.1)
        a = goloop.stats()["sysmon_wakeups"]
        await asyncio.sleep(1.0)
        return goloop.stats()["sysmon_wakeups"] - a

    wakeups, _ = run(main)
    assert wakeups <= 15


def test_stats_report_steps_preemptions_and_the_longest_step(run_python):
    code = """
import asyncio, json, time, goloop
async def hog():
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        pass
goloop.run(hog())
print(json.dumps(goloop.stats()))
"""
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    import json
    s = json.loads(r.stdout)
    for key in ("steps", "preemptions", "preempt_requests", "preempt_declined",
                "longest_step", "sysmon_wakeups", "stacks_in_use", "stacks_cached",
                "step_workers_pooled"):
        assert key in s
    assert s["preemptions"] >= 5 and s["preempt_requests"] >= s["preemptions"]
    assert s["steps"] > s["preemptions"]
    assert s["longest_step"] < 0.15      # 0.3 s of work in 10 ms slices
    assert s["step_workers_pooled"] >= 1  # the worker that ran it, back in the pool


def test_closing_a_loop_with_a_preempted_step_unwinds_it():
    log = []

    async def hog():
        try:
            burn(5)
        finally:
            log.append("finally")

    loop = goloop.new_event_loop()
    task = loop.create_task(hog())

    async def stop_soon():
        await asyncio.sleep(0.05)

    loop.run_until_complete(stop_soon())   # the hog is preempted, not done
    assert not task.done()
    loop.close()
    import gc
    gc.collect()
    assert log == ["finally"]


def test_preempted_steps_leak_no_objects_and_no_fds():
    """A task preempted many times is freed once done (the worker, the
    handle and the handler let go of it and its loop), and arming and
    disarming preemption per run leaves no file descriptor behind."""
    import gc
    import weakref

    refs = []

    async def hog():
        burn(0.1)

    async def main():
        task = asyncio.create_task(hog())
        refs.append(weakref.ref(task))
        await task

    fds = len(os.listdir("/proc/self/fd"))
    total = 0
    for _ in range(5):
        _, d = run(main)
        total += d["preemptions"]
    gc.collect()
    assert total >= 20
    assert [r() for r in refs] == [None] * 5
    assert len(os.listdir("/proc/self/fd")) == fds


@pytest.mark.parametrize("step_seconds, preempted", [(0.03, False), (0.4, True)])
def test_a_step_after_a_long_plain_callback_gets_its_whole_slice(step_seconds, preempted):
    """The loop reuses the clock reading of a step's end as the next step's
    start (preempt.c, the clock hint); a plain callback between them runs
    on the loop's own stack for as long as it likes, and the step after it
    must still be stamped when it starts: a 30 ms step after a 0.4 s
    callback, with a 0.15 s slice, is not preempted.  The control (a 0.4 s
    step) is."""

    async def main():
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)
        loop.call_soon(burn, 0.4)   # runs after this step, before the next
        await asyncio.sleep(0)
        before = goloop.stats()["preemptions"]
        burn(step_seconds)
        return goloop.stats()["preemptions"] - before

    loop = goloop.new_event_loop(time_slice=0.15)
    try:
        assert (loop.run_until_complete(main()) > 0) == preempted
    finally:
        loop.close()
