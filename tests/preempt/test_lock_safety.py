"""Preemption and threading locks: a step that holds one is never parked.

Every task step of a loop runs on the loop's one OS thread, and threading
locks belong to threads: a step parked while it holds a Lock makes the next
step that wants it block the thread for good, and one parked inside an
RLock lets the next step re-enter it.  goloop counts the locks each step
holds (csrc/cpython/locks.c) and defers a preemption until the count is
back to 0.

The probes (probes/lock_probe.py) run in a subprocess each, so that a
deadlock ends in faulthandler's dump and exit instead of a hung suite;
every kind of lock is tried at three slices, with `with` blocks and
acquire()/release() pairs, on locks made before and after goloop was
imported.  The controls run the same probe with the counting off and must
see the deadlock and the overlaps.
"""
import asyncio
import inspect
import sys
import threading
import time

import pytest

import goloop
from goloop import _goloop
from preempt_helpers import run_probe

KINDS = ["Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore", "logging"]
SLICES = [0.0002, 0.001, 0.01]


@pytest.mark.parametrize("time_slice", SLICES)
@pytest.mark.parametrize("kind", KINDS)
def test_steps_never_meet_inside_a_lock_and_never_deadlock(run_python, kind, time_slice):
    r, out = run_probe(run_python, "lock_probe.py", kind, time_slice)
    assert r.returncode == 0, f"deadlock or crash:\n{r.stderr[-3000:]}"
    assert out["sections"] == 80
    assert out["overlaps"] == 0, out
    # The probe's unguarded work was preempted, and sysmon asked while a
    # lock was held (deferred), so the sections were really at risk.
    assert out["preemptions"] >= 10 and out["deferred"] >= 1, out


def test_control_without_lock_counting_a_lock_deadlocks(run_python):
    r, out = run_probe(run_python, "lock_probe.py", "Lock", 0.001, "--unsafe", timeout_s=8)
    assert r.returncode != 0 and "Timeout" in r.stderr, (r.returncode, out, r.stderr[-2000:])
    assert "acquire" in r.stderr or "__enter__" in r.stderr or "guarded" in r.stderr


@pytest.mark.parametrize("kind", ["RLock", "Condition", "logging"])
def test_control_without_lock_counting_steps_meet_inside_an_rlock(run_python, kind):
    r, out = run_probe(run_python, "lock_probe.py", kind, 0.001, "--unsafe")
    assert r.returncode == 0, r.stderr[-3000:]
    assert out["overlaps"] > 0, out


def _in_a_step(body):
    """Run body() inside a task step on goloop; its result."""
    async def main():
        return body()
    return goloop.run(main())


def test_the_count_follows_acquire_release_and_condition_wait():
    held = _goloop._locks_held

    def body():
        seen = [held()]
        lock, rlock, sem = threading.Lock(), threading.RLock(), threading.Semaphore(2)
        with lock:
            seen.append(held())
            with rlock, rlock:
                seen.append(held())
            seen.append(held())
        seen.append(held())
        assert lock.acquire(blocking=False)
        assert not lock.acquire(blocking=False)      # not taken: not counted
        seen.append(held())
        lock.release()
        sem.acquire()
        seen.append(held())
        sem.release()
        cond = threading.Condition()
        with cond:
            t = threading.Thread(target=lambda: (time.sleep(0.05), cond.acquire(), cond.notify(), cond.release()))
            t.start()
            assert cond.wait(timeout=10)   # releases, waits, takes it back
            seen.append(held())
        t.join()
        seen.append(held())
        other = threading.Lock()
        other.acquire()
        threading.Thread(target=other.release).start()   # released elsewhere
        time.sleep(0.05)
        seen.append(held())
        return seen

    assert _in_a_step(body) == [0, 1, 3, 1, 0, 1, 1, 1, 0, 1]


def test_a_lock_released_by_another_task_never_makes_the_count_negative():
    lock = threading.Lock()

    async def main():
        lock.acquire()
        async def releaser():
            lock.release()
            return _goloop._locks_held()
        released = await asyncio.create_task(releaser())
        async def taker():
            with lock:
                return _goloop._locks_held()
        return released, await asyncio.create_task(taker())

    assert goloop.run(main()) == (0, 1)


def test_counting_is_per_step_and_off_the_loop_free():
    # Outside any step (the thread's own stack), nothing is counted.
    lock = threading.Lock()
    with lock:
        assert _goloop._locks_held() == 0

    async def main():
        lock.acquire()          # held across an await: the next step starts at 0
        await asyncio.sleep(0)
        n = _goloop._locks_held()
        lock.release()
        return n

    assert goloop.run(main()) == 0


def _signature(f):
    try:
        return str(inspect.signature(f))
    except ValueError:   # (some builtins have none, tracked or not)
        return None


def test_lock_methods_still_look_like_themselves():
    lock, rlock = threading.Lock(), threading.RLock()
    assert lock.acquire.__name__ == "acquire" and "lock" in lock.acquire.__doc__.lower()
    assert type(lock).release.__qualname__.endswith("release")
    for method in (lock.acquire, rlock.acquire, threading.Semaphore(1).acquire):
        assert _signature(method) == _signature(method.__func__.__wrapped__.__get__(method.__self__))
    assert threading.Semaphore.acquire.__wrapped__.__name__ == "acquire"
    assert repr(type(lock).__enter__).startswith("<goloop lock tracker of")
    with pytest.raises(TypeError):
        type(lock).acquire()                        # no self: the original's error
    with pytest.raises(RuntimeError):
        threading.Lock().release()                  # not locked: the original's error
    with pytest.raises(TypeError):
        type(type(lock).acquire)()                  # not made from Python


def test_locks_on_other_threads_work_as_before():
    lock, count = threading.Lock(), [0]

    def worker():
        for _ in range(10000):
            with lock:
                count[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count[0] == 40000


def test_lock_operations_leak_no_references():
    lock, rlock = threading.Lock(), threading.RLock()

    def body():
        before = (sys.getrefcount(lock), sys.getrefcount(rlock))
        for _ in range(1000):
            with lock, rlock:
                pass
            lock.acquire()
            lock.release()
        return before, (sys.getrefcount(lock), sys.getrefcount(rlock))

    before, after = _in_a_step(body)
    assert before == after


def test_a_deferred_preemption_lands_as_soon_as_the_lock_is_released():
    """sysmon asks while the lock is held; the release asks again at once.
    How far the step got past the release before the ticker ran tells:
    with the request repeated by the release, within a couple of the 1 ms
    iterations; left to sysmon's back-off (hundreds of ms into a 1 s slice
    by then), hundreds."""
    lock = threading.Lock()
    progress = {"n": 0, "at_tick": None, "ticks_inside": None}

    def burn(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    async def ticker(state):
        while True:
            await asyncio.sleep(0)
            if state.get("releasing") and progress["at_tick"] is None:
                progress["at_tick"] = progress["n"]
            state["ticks"] = state.get("ticks", 0) + 1

    async def main():
        state = {}
        t = asyncio.create_task(ticker(state))
        await asyncio.sleep(0.01)
        with lock:
            start = state.get("ticks", 0)
            burn(1.3)                    # past the 1 s slice, lock held
            progress["ticks_inside"] = state.get("ticks", 0) - start
            state["releasing"] = True    # the last thing before __exit__
        for _ in range(500):            # 0.5 s after the release
            burn(0.001)
            progress["n"] += 1
        t.cancel()

    before = goloop.stats()
    goloop.run(main(), time_slice=1.0)
    after = goloop.stats()
    assert progress["ticks_inside"] == 0
    assert after["preempt_deferred"] > before["preempt_deferred"]
    assert progress["at_tick"] is not None and progress["at_tick"] <= 5, progress


def _redirected_while_others_print(unsafe):
    """Task A computes inside redirect_stdout(buf) for 15 slices; task B
    prints between its awaits meanwhile.  What did buf get?"""
    import contextlib
    import io

    buf = io.StringIO()

    def burn(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    async def a():
        with contextlib.redirect_stdout(buf):
            print("A")
            burn(0.15)
            print("A")

    async def b(stop):
        while not stop.done():
            print("B")
            await asyncio.sleep(0.001)

    async def main():
        stop = asyncio.get_running_loop().create_future()
        tb = asyncio.create_task(b(stop))
        await asyncio.sleep(0.005)
        await a()
        stop.set_result(None)
        await tb

    _goloop._unsafe_preempt(locks=unsafe)
    try:
        before = goloop.stats()["preempt_deferred"]
        goloop.run(main())
        return buf.getvalue(), goloop.stats()["preempt_deferred"] - before
    finally:
        _goloop._unsafe_preempt()


def test_a_step_is_not_preempted_while_stdout_is_redirected():
    out, deferred = _redirected_while_others_print(unsafe=False)
    assert out == "A\nA\n" and deferred >= 1
    # The control: preempted inside, B's lines land in A's buffer.
    out, _ = _redirected_while_others_print(unsafe=True)
    assert "B" in out
