"""Preemption of loops on threads other than the main one.

CPython runs signal handlers on the main thread only, so a loop elsewhere
is reached another way: sysmon queues a pending call that the loop's thread
runs at its next bytecode boundary (3.12+), or has goloop's tracer thread
install a trace function on it (3.11) (csrc/cpython/preempt.c says how, per
version).  What is checked here:

- a loop in a worker thread, a CPU hog beside a light task: the light task
  is served all along (no wait over MAX_GAP while the hog runs HOG_S), with
  preemptions counted, and no PreemptionWarning;
- two loops in two threads and one in the main thread at once, each with a
  hog and a light task: every light task is served;
- loop threads that end (one after another, each while its hog was being
  preempted) while sysmon runs for the main thread's loop: nothing breaks,
  the main loop is preempted throughout, and a new thread's loop is again;
- two and three hogs in one worker thread's loop take turns: a step's
  preemption comes while the previous one is parked inside the pending call
  that parked it (both tests fail if that call keeps its thread's claim on
  the pending calls: preempt.c, gl_py_release_pending_claim);
- a daemon thread's loop still hogging at exit: the process ends cleanly;
- per thread: goloop.atomic() in one thread's loop is not preempted while
  another thread's loop is; a step holding a threading lock is preempted
  only once it lets go; a step that waits in C without the GIL while sysmon
  keeps asking does not block later preemptions.

The stock-asyncio variants (strict xfail, conftest.py) prove the first two
discriminate.  Margins: on this 2-core machine a light task beside one
thread's hog waits 11-25 ms at the default 10 ms slice, beside three hogs
in three threads (one GIL) 30-60 ms; MAX_GAP is 5-20 times that, a stock
loop's wait is the whole hog (HOG_S).
"""
import asyncio
import sys
import threading
import time
import warnings

import pytest

import goloop
from preempt_helpers import GOLOOP, expect_preempted, make_loop, perf, preemptions

assert goloop._goloop._preempts_threads()

HOG_S = 1.5        # the hog's wall time
MAX_GAP = 0.3      # the light task never waits longer than this for a turn
MIN_PREEMPTIONS = 10


def burn(seconds, stop=None):
    end = perf() + seconds
    while perf() < end:
        if stop is not None and stop():
            return


async def hog_beside_light(hog_s=HOG_S):
    """Run a hog of hog_s beside a task that sleeps 1 ms in a loop; the
    longest wait between the light task's turns while the hog ran, and how
    many turns it had."""
    stamps = []

    async def light():
        while True:
            stamps.append(perf())
            await asyncio.sleep(0.001)

    async def hog():
        burn(hog_s)

    t = asyncio.create_task(light())
    await asyncio.sleep(0.01)
    began = perf()
    await hog()
    ended = perf()
    t.cancel()
    during = [began] + [s for s in stamps if began <= s <= ended] + [ended]
    return max(b - a for a, b in zip(during, during[1:])), len(during) - 2


def run_on(kind, coro_fn, **options):
    with asyncio.Runner(loop_factory=lambda: make_loop(kind, **options)) as runner:
        return runner.run(coro_fn())


def in_thread(fn, name="loop-thread"):
    """Run fn() in a new thread; its result (or raise its exception)."""
    out = {}

    def target():
        try:
            out["result"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=target, name=name)
    t.start()
    return t, out


def result_of(t, out):
    t.join()
    if "error" in out:
        raise out["error"]
    return out["result"]


def test_a_loop_in_a_worker_thread_serves_a_light_task_beside_a_hog(loop_kind):
    before = preemptions()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        gap, turns = result_of(*in_thread(lambda: run_on(loop_kind, hog_beside_light)))
    made = preemptions() - before
    assert [x for x in w if issubclass(x.category, goloop.PreemptionWarning)] == []
    expect_preempted(gap < MAX_GAP, f"the light task waited {gap:.3f} s for a turn")
    assert turns >= 10, turns
    if loop_kind == GOLOOP:
        assert made >= MIN_PREEMPTIONS, made


def test_two_thread_loops_and_the_main_threads_at_once(loop_kind):
    before = preemptions()
    threads = [in_thread(lambda: run_on(loop_kind, hog_beside_light), name=f"loop-{i}")
               for i in range(2)]
    main_gap, _ = run_on(loop_kind, hog_beside_light)
    gaps = [result_of(*t)[0] for t in threads] + [main_gap]
    made = preemptions() - before
    for gap in gaps:
        expect_preempted(gap < 2 * MAX_GAP, f"a light task waited {gap:.3f} s: {gaps}")
    if loop_kind == GOLOOP:
        assert made >= 3 * MIN_PREEMPTIONS, made


def test_loop_threads_that_end_while_sysmon_runs():
    """Twenty threads, one after another, each run a loop whose step hogs
    for three slices (so that sysmon is asking for it as the thread ends),
    while the main thread's loop runs a hog and a light task; then one more
    thread's loop is preempted as the first was."""
    ended = []

    def short_lived():   # a failed assert leaves the thread out of `ended`
        async def main():
            await asyncio.sleep(0)
            assert goloop.stats()["preempting_loops"] == 2   # this and the main thread's
            burn(0.03)
        run_on(GOLOOP, main)
        ended.append(threading.current_thread().name)

    async def main():
        stamps = []
        stop = False

        async def light():
            while not stop:
                stamps.append(perf())
                await asyncio.sleep(0.001)

        def churn():
            for i in range(20):
                t = threading.Thread(target=short_lived, name=f"short-{i}")
                t.start()
                t.join()

        t = asyncio.create_task(light())
        await asyncio.sleep(0.01)
        churner = threading.Thread(target=churn)
        churner.start()
        began = perf()
        burn(5, stop=lambda: not churner.is_alive())
        ended_at = perf()
        churner.join()
        stop = True
        await t
        during = [began] + [s for s in stamps if began <= s <= ended_at] + [ended_at]
        return max(b - a for a, b in zip(during, during[1:]))

    before = preemptions()
    gap = run_on(GOLOOP, main)
    assert len(ended) == 20, ended
    assert goloop.stats()["preempting_loops"] == 0   # every thread's record went
    assert gap < 2 * MAX_GAP, gap
    assert preemptions() - before >= 20, preemptions() - before
    before = preemptions()
    gap, _ = result_of(*in_thread(lambda: run_on(GOLOOP, hog_beside_light)))
    assert gap < MAX_GAP and preemptions() - before >= MIN_PREEMPTIONS, (gap, preemptions() - before)


def test_atomic_in_one_threads_loop_while_another_is_preempted():
    def ticks_during(body):
        """Turns a 1 ms ticker got while body() ran in a step."""
        async def main():
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.001)

            t = asyncio.create_task(ticker())
            await asyncio.sleep(0.005)
            first = ticks
            body()
            got = ticks - first
            t.cancel()
            return got
        return run_on(GOLOOP, main)

    def atomic_hog():
        with goloop.atomic():
            burn(0.3)

    atomic_side = in_thread(lambda: ticks_during(atomic_hog), name="atomic")
    plain_side = in_thread(lambda: ticks_during(lambda: burn(0.3)), name="plain")
    assert result_of(*atomic_side) == 0
    assert result_of(*plain_side) > 0


def test_a_thread_loops_step_holding_a_lock_is_preempted_once_it_lets_go():
    lock = threading.Lock()

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.create_task(ticker())
        await asyncio.sleep(0.005)
        first = ticks
        with lock:
            burn(0.2)
            # Counted inside: on 3.11 the preemption that waited for the
            # release comes at the next line start, this line's successor.
            held = ticks - first
        burn(0.2)
        after = ticks - first - held
        t.cancel()
        return held, after

    held, after = result_of(*in_thread(lambda: run_on(GOLOOP, main)))
    assert held == 0
    assert after > 0


def test_a_step_waiting_without_the_gil_leaves_later_preemptions_working():
    """While a step sleeps in C (the GIL released) sysmon asks again and
    again; the pending calls it queues are kept few, and the loop's next
    hog is preempted as usual."""
    async def main():
        await asyncio.sleep(0)
        time.sleep(0.3)   # sysmon asks ~10 times meanwhile
        return await hog_beside_light(0.5)

    before = preemptions()
    gap, turns = result_of(*in_thread(lambda: run_on(GOLOOP, main)))
    assert gap < MAX_GAP and turns > 5, (gap, turns)
    assert preemptions() - before >= 5


def test_a_daemon_threads_loop_still_hogging_at_exit(run_python):
    """The interpreter exits while a daemon thread's loop is being preempted:
    sysmon stops asking for it at exit (before the interpreter's pending-call
    queue is torn down), and the process ends cleanly."""
    code = """if 1:
        import asyncio, threading, time, goloop
        def burn():
            while True:
                pass
        async def main():
            async def light():
                while True:
                    await asyncio.sleep(0.001)
            asyncio.create_task(light())
            await asyncio.sleep(0.01)
            burn()
        threading.Thread(target=lambda: goloop.run(main(), preempt=True), daemon=True).start()
        before = goloop.stats()["preemptions"]
        time.sleep(0.3)
        print(goloop.stats()["preemptions"] - before)
    """
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) > 5, r.stdout


def test_two_hogs_in_a_worker_threads_loop_take_turns(loop_kind):
    """Two hogs in one worker thread's loop: each is preempted in turn, so
    both progress from their first 100 ms on.  (The second hog's preemption
    comes while the first is parked inside the pending call that parked it:
    this needs that call to have given up its thread's claim on the pending
    calls — preempt.c, gl_py_release_pending_claim.)"""
    async def main():
        starts = {}

        async def hog(name):
            starts[name] = perf()
            burn(0.6)

        began = perf()
        await asyncio.gather(hog("a"), hog("b"))
        return max(starts.values()) - began

    before = preemptions()
    second_start = result_of(*in_thread(lambda: run_on(loop_kind, main)))
    expect_preempted(second_start < 0.1, f"the second hog started after {second_start:.3f} s")
    if loop_kind == GOLOOP:
        assert preemptions() - before >= MIN_PREEMPTIONS


def test_hogs_in_a_worker_threads_loop_keep_taking_turns():
    """Three hogs of 0.5 s in one worker thread's loop: none waits over
    MAX_GAP for a turn (each park and each later preemption in turn)."""
    async def main():
        stamps = {i: [] for i in range(3)}

        async def hog(i):
            end = perf() + 0.5
            while perf() < end:
                stamps[i].append(perf())
                burn(0.001)

        began = perf()
        await asyncio.gather(*(hog(i) for i in range(3)))
        ended = perf()
        gaps = []
        for s in stamps.values():
            s = [began] + s
            gaps.append(max(b - a for a, b in zip(s, s[1:])))
        return max(gaps), ended - began

    gap, took = result_of(*in_thread(lambda: run_on(GOLOOP, main)))
    assert gap < MAX_GAP, (gap, took)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.11's tracer thread")
def test_311_a_threads_own_trace_function_is_left_alone():
    """3.11 reaches another thread's loop through a trace function that
    goloop's tracer thread installs there; a thread with a trace function
    of its own (a debugger's, coverage's) keeps it, and its loop then runs
    cooperatively (the requests are declined)."""
    events = []

    def tracer(frame, event, arg):
        events.append(event)
        return None

    async def main():
        burn(0.2)

    def body():
        sys.settrace(tracer)
        try:
            before = goloop.stats()
            run_on(GOLOOP, main)
            after = goloop.stats()
            return (after["preemptions"] - before["preemptions"],
                    after["preempt_declined"] - before["preempt_declined"],
                    sys.gettrace() is tracer)
        finally:
            sys.settrace(None)

    preempted, declined, kept = result_of(*in_thread(body))
    assert kept and events
    assert preempted == 0 and declined > 0


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.11's tracer thread")
def test_311_the_tracer_thread_stops_around_a_fork_and_at_exit(run_python):
    code = r"""
import asyncio, os, threading, time, goloop

def burn(s):
    end = time.perf_counter() + s
    while time.perf_counter() < end:
        pass

async def main():
    burn(0.1)

def run():
    asyncio.Runner(loop_factory=goloop.new_event_loop).run(main())

t = threading.Thread(target=run); t.start(); t.join()
names = lambda: sorted(x.name for x in threading.enumerate())
print("before", names())
pid = os.fork()
if pid == 0:
    t = threading.Thread(target=run); t.start(); t.join()
    print("child", goloop.stats()["preemptions"] > 0, names(), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print("parent", names())
t = threading.Thread(target=run); t.start(); t.join()
print("after", goloop.stats()["preemptions"] > 0)
"""
    r = run_python(code, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "before ['MainThread', 'goloop-tracer']"
    assert lines[1] == "child True ['MainThread', 'goloop-tracer']"
    assert lines[2] == "parent ['MainThread', 'goloop-tracer']"
    assert lines[3] == "after True"
