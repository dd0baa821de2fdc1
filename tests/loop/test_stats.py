"""goloop.stats(loop, reset=...) and the scheduler trace (GOLOOP_SCHEDTRACE).

Per loop: the steps, callbacks and preemptions a loop ran are counted on that
loop and no other; reset=True zeroes counters, not gauges; the gauges (ready
queue, timers, fds, preempted steps waiting) say what the loop holds.  The
trace: a child interpreter with GOLOOP_SCHEDTRACE=50 prints lines in the
documented format, keeps printing while its loop is stuck in a 1 s step, and
says so (stuck= grows, steps= stays 0); a bad value is a clear ValueError.
Timed assertions keep a wide margin (a loaded machine, a debug build)."""
import asyncio
import re
import socket
import sys
import time

import pytest

import goloop

# The documented line (README, "Scheduler trace").
LINE = re.compile(
    r"^goloop: (?P<t>\d+)ms: loop=(?P<loop>\d+) thread=(?P<thread>\d+) "
    r"steps=(?P<steps>\d+) callbacks=(?P<callbacks>\d+) preempt=(?P<preempt>\d+) "
    r"longest=(?P<longest>\d+\.\d{3})ms stuck=(?P<stuck>\d+)ms "
    r"ready=(?P<ready>\d+) timers=(?P<timers>\d+) fds=(?P<fds>-?\d+) "
    r"preempted=(?P<preempted>\d+) stacks=(?P<in_use>\d+)/(?P<cached>\d+) "
    r"rss=(?P<rss>\d+\.\d)MiB$"
)

# What goloop.stats() reported before per-loop statistics: every key stays.
OLD_KEYS = {
    "stacks_in_use", "stacks_cached", "stacks_mapped", "stacks_reused", "stacks_trimmed",
    "goroutines_started", "goroutines_finished", "goroutines_live", "data_chunks_cached",
    "step_workers_pooled", "step_workers_pinned", "handles_reusable", "longest_step",
    "steps", "preemptions", "preempt_declined", "preempt_deferred", "preempt_withheld",
    "steps_held_back", "preempt_requests", "sysmon_wakeups",
}
LOOP_COUNTERS = ("steps", "callbacks", "preemptions")
LOOP_GAUGES = ("ready", "timers", "fds", "steps_preempted")


def hog(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def run(loop, coro):
    return loop.run_until_complete(coro)


@pytest.fixture
def loops():
    made = []

    def make(**options):
        loop = goloop.new_event_loop(**options)
        made.append(loop)
        return loop

    yield make
    for loop in made:
        loop.close()


def test_module_stats_keep_their_keys_and_grow():
    s = goloop.stats()
    assert OLD_KEYS <= set(s)
    for key in ("callbacks", "loops_running", "ready", "timers", "fds", "steps_preempted", "rss"):
        assert key in s, key
    assert s["rss"] > 1 << 20
    assert goloop.stats(None).keys() == s.keys()


def test_steps_and_callbacks_are_counted_on_their_loop(loops):
    a, b = loops(), loops()
    n = 300

    async def sleeper():
        for _ in range(n):
            await asyncio.sleep(0)

    async def callbacks():
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        left = [n]

        def tick():
            left[0] -= 1
            if left[0] == 0:
                done.set_result(None)

        for _ in range(n):
            loop.call_soon(tick)
        await done

    before = goloop.stats(a)
    run(a, sleeper())
    run(a, callbacks())
    after = goloop.stats(a)
    assert after["steps"] - before["steps"] >= n
    assert after["callbacks"] - before["callbacks"] >= n
    assert after["loop_id"] == before["loop_id"] != goloop.stats(b)["loop_id"]
    # The other loop ran nothing.
    sb = goloop.stats(b)
    assert (sb["steps"], sb["callbacks"], sb["preemptions"]) == (0, 0, 0)
    assert sb["longest_step"] == 0.0
    # The process-wide counters saw them too.
    assert goloop.stats()["callbacks"] >= n


def test_preemptions_are_counted_on_the_hogs_loop_only(loops):
    hogging = loops(preempt=True, time_slice=0.002)
    quiet = loops(preempt=True, time_slice=0.002)

    async def main():
        async def light():
            for _ in range(20):
                await asyncio.sleep(0.001)

        async def cpu():
            hog(0.3)

        await asyncio.gather(cpu(), light())

    async def short_steps():
        for _ in range(50):
            await asyncio.sleep(0)

    run(hogging, main())
    run(quiet, short_steps())
    h, q = goloop.stats(hogging), goloop.stats(quiet)
    assert h["preemptions"] >= 1, h
    assert h["steps"] > h["preemptions"]
    assert 0 < h["longest_step"] < 0.3, h   # stretches, not the whole 0.3 s step
    assert q["preemptions"] == 0, q
    assert q["steps"] >= 50


def test_a_stuck_step_is_the_longest(loops):
    loop = loops(preempt=False)

    async def stuck():
        hog(0.05)

    run(loop, stuck())
    assert goloop.stats(loop)["longest_step"] >= 0.04


def test_reset_zeroes_counters_not_gauges(loops):
    loop = loops()

    async def work():
        for _ in range(10):
            await asyncio.sleep(0)

    run(loop, work())
    handles = [loop.call_later(3600, lambda: None) for _ in range(3)]
    first = goloop.stats(loop, reset=True)
    assert first["steps"] >= 10 and first["longest_step"] > 0
    second = goloop.stats(loop)
    for key in LOOP_COUNTERS:
        assert second[key] == 0, key
    assert second["longest_step"] == 0.0
    for key in LOOP_GAUGES:
        assert second[key] == first[key], key
    assert second["timers"] == 3
    run(loop, work())
    assert goloop.stats(loop)["steps"] >= 10
    for h in handles:
        h.cancel()


def test_module_reset():
    loop = goloop.new_event_loop()
    try:
        async def work():
            for _ in range(10):
                await asyncio.sleep(0)

        loop.run_until_complete(work())
        goloop.stats(reset=True)
        s = goloop.stats()
        assert s["steps"] == 0 and s["callbacks"] == 0 and s["longest_step"] == 0.0
        assert s["goroutines_started"] == 0
        assert s["stacks_in_use"] == goloop.stats()["stacks_in_use"]   # a gauge: kept
        loop.run_until_complete(work())
        assert goloop.stats()["steps"] >= 10
        assert goloop.stats(loop)["steps"] >= 20   # the loop's own were not reset
    finally:
        loop.close()


def test_gauges(loops):
    loop = loops()
    s0 = goloop.stats(loop)
    assert s0["fds"] == 1   # asyncio's self-pipe
    assert (s0["ready"], s0["timers"], s0["steps_preempted"]) == (0, 0, 0)
    handles = [loop.call_later(3600, lambda: None) for _ in range(4)]
    for _ in range(5):
        loop.call_soon(lambda: None)
    a, b = socket.socketpair()
    try:
        loop.add_reader(a, lambda: None)
        loop.add_writer(b, lambda: None)
        s = goloop.stats(loop)
        assert s["timers"] == 4 and s["ready"] == 5 and s["fds"] == 3, s
        handles[0].cancel()
        loop.remove_reader(a)
        s = goloop.stats(loop)
        assert s["timers"] == 3 and s["fds"] == 2, s
        loop.remove_writer(b)
        assert goloop.stats(loop)["fds"] == 1
    finally:
        a.close()
        b.close()
        for h in handles:
            h.cancel()


def test_gauges_with_another_selector():
    import selectors

    loop = goloop.EventLoop(selectors.DefaultSelector())
    try:
        assert goloop.stats(loop)["fds"] == 1   # len(get_map()): the self-pipe
    finally:
        loop.close()


def test_module_gauges_sum_the_running_loops(loops):
    loop = loops()

    async def main():
        handles = [loop.call_later(3600, lambda: None) for _ in range(7)]
        s = goloop.stats()
        own = goloop.stats(loop)
        for h in handles:
            h.cancel()
        return s, own

    idle = goloop.stats()
    s, own = run(loop, main())
    assert s["loops_running"] == idle["loops_running"] + 1
    assert s["timers"] >= 7 and own["timers"] == 7
    assert s["fds"] >= 1
    assert goloop.stats()["loops_running"] == idle["loops_running"]


def test_loop_stats_show_process_gauges(loops):
    s = goloop.stats(loops())
    for key in ("stacks_in_use", "stacks_cached", "goroutines_live", "rss"):
        assert key in s
    assert "preempt_declined" not in s   # process-wide counters stay in stats()


@pytest.mark.parametrize("bad", ["asyncio", "str", "int"])
def test_not_a_goloop_loop(bad):
    if bad == "asyncio":
        obj = asyncio.SelectorEventLoop()
    else:
        obj = {"str": "loop", "int": 1}[bad]
    try:
        with pytest.raises(TypeError, match="must be a goloop event loop, not"):
            goloop.stats(obj)
        with pytest.raises(TypeError, match="must be a goloop event loop"):
            goloop.stats(obj, reset=True)
    finally:
        if bad == "asyncio":
            obj.close()


def test_stats_arguments():
    with pytest.raises(TypeError):
        goloop.stats(None, True)   # reset is keyword-only
    with pytest.raises(TypeError):
        goloop.stats(nope=1)


# ---- the trace ---------------------------------------------------------------

TRACE_PROGRAM = r"""
import asyncio, json, os, sys, threading, time
import goloop
from goloop import _goloop

def hog(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass

async def main():
    await asyncio.sleep(0.3)
    with goloop.atomic():                 # stuck: never preempted
        sys.stdout.write("stuck-begin\n"); sys.stdout.flush()
        hog(1.0)
    sys.stdout.write("stuck-end\n"); sys.stdout.flush()
    async def cpu():
        hog(0.5)                          # preempted at each slice
    await asyncio.gather(cpu(), asyncio.sleep(0.01))
    await asyncio.sleep(0.3)
    return _goloop._schedtrace_period()

period, on = goloop.run(main(), time_slice=0.005)
print(json.dumps({"thread": threading.get_native_id(), "period": period, "on_during": on,
                  "on_after": _goloop._schedtrace_period()[1],
                  "threads_after": len(os.listdir("/proc/self/task"))}))
"""


def parse(stderr):
    lines = [line for line in stderr.splitlines() if line.startswith("goloop: ")]
    parsed = []
    for line in lines:
        m = LINE.match(line)
        assert m, f"not in the documented format: {line!r}"
        parsed.append({k: float(v) if "." in v else int(v) for k, v in m.groupdict().items()})
    return parsed


def test_schedtrace_prints_while_stuck(run_python):
    import json

    p = run_python(TRACE_PROGRAM, env={"GOLOOP_SCHEDTRACE": "50"}, timeout=120)
    assert p.returncode == 0, p.stderr
    out = p.stdout.splitlines()
    info = json.loads(out[-1])
    assert out[:2] == ["stuck-begin", "stuck-end"]
    assert info["period"] == 50 and info["on_during"] is True
    assert info["on_after"] is False          # ended with the last loop
    assert info["threads_after"] == 1         # no thread of goloop's left
    lines = parse(p.stderr)
    stray = [x for x in p.stderr.splitlines() if not x.startswith("goloop: ")]
    assert not stray, stray
    # ~2.1 s of loop at 50 ms: ~40 lines; a huge margin either way.
    assert 10 <= len(lines) <= 400, len(lines)
    assert {x["loop"] for x in lines} == {lines[0]["loop"]}
    assert {x["thread"] for x in lines} == {info["thread"]}
    times = [x["t"] for x in lines]
    assert times == sorted(times)
    # Asleep in its poll (the first 0.3 s) a loop is not stuck.
    assert lines[0]["stuck"] == 0 and lines[1]["stuck"] == 0, lines[:2]
    # While stuck in the 1 s step, lines keep coming and say so.
    stuck = [x for x in lines if x["stuck"] > 0]
    assert len(stuck) >= 5, lines
    assert all(x["steps"] == 0 and x["callbacks"] == 0 for x in stuck)
    assert max(x["stuck"] for x in stuck) >= 300
    assert max(x["stuck"] for x in stuck) <= 5000
    assert stuck[-1]["t"] - stuck[0]["t"] >= 300
    # The stuck step ends up as some period's longest; the hog is preempted.
    assert max(x["longest"] for x in lines) >= 500.0
    assert sum(x["preempt"] for x in lines) >= 1
    assert sum(x["steps"] for x in lines) >= 3
    # Plausible gauges.
    assert all(x["fds"] >= 1 for x in lines)
    assert all(x["in_use"] >= 1 or x["stuck"] == 0 for x in lines)
    assert all(1.0 < x["rss"] < 100000.0 for x in lines)


THREADS_PROGRAM = r"""
import asyncio, json, os, threading, time, warnings
import goloop
from goloop import _goloop

async def nap():
    await asyncio.sleep(0.4)

ids = []
def other():
    ids.append(threading.get_native_id())
    goloop.run(nap())

async def main():
    t = threading.Thread(target=other)
    t.start()
    await asyncio.sleep(0.1)
    # A fork while the trace (and a loop in another thread) runs: no
    # warning that the process is multi-threaded... from goloop's threads.
    t.join()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pid = os.fork()
        if pid == 0:
            # The child traces none of the loops it inherits.
            time.sleep(0.15)
            os._exit(3 if _goloop._schedtrace_period()[1] else 0)
    _, status = os.waitpid(pid, 0)
    await asyncio.sleep(0.3)
    return status

status = goloop.run(main())
print(json.dumps({"main": threading.get_native_id(), "other": ids[0], "status": status}))
"""


def test_schedtrace_loops_in_threads_and_fork(run_python):
    import json

    p = run_python(THREADS_PROGRAM, env={"GOLOOP_SCHEDTRACE": "50ms"}, timeout=120)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout.splitlines()[-1])
    assert info["status"] == 0, info
    lines = parse(p.stderr)
    by_thread = {}
    for x in lines:
        by_thread.setdefault(x["thread"], set()).add(x["loop"])
    assert set(by_thread) == {info["main"], info["other"]}, by_thread
    assert by_thread[info["main"]].isdisjoint(by_thread[info["other"]])
    # Lines go on after the fork (the thread is started again in the parent).
    main_lines = [x for x in lines if x["thread"] == info["main"]]
    assert len(main_lines) >= 4


@pytest.mark.parametrize("value", ["fast", "-5", "1.5", "10s"])
def test_schedtrace_bad_value(run_python, value):
    p = run_python("import goloop", env={"GOLOOP_SCHEDTRACE": value})
    assert p.returncode != 0
    assert "ValueError" in p.stderr
    assert f"GOLOOP_SCHEDTRACE={value!r}" in p.stderr
    assert "milliseconds" in p.stderr


@pytest.mark.parametrize("value", ["", "0"])
def test_schedtrace_off(run_python, value):
    p = run_python(
        """
        import asyncio, goloop
        from goloop import _goloop
        async def main():
            await asyncio.sleep(0.2)
            return _goloop._schedtrace_period()
        print(goloop.run(main()))
        """,
        env={"GOLOOP_SCHEDTRACE": value},
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "(0, False)"
    assert "goloop: " not in p.stderr


def test_no_trace_thread_without_a_running_loop():
    from goloop import _goloop

    # Whatever the test process's setting, nothing runs between loops.
    assert _goloop._schedtrace_period()[1] is False
    assert sys.modules["goloop"] is goloop
