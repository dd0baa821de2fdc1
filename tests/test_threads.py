"""Goroutines on several threads: each thread runs its own, concurrently; a
goroutine belongs to the thread that started it."""
import contextvars
import gc
import sys
import threading
import time
import traceback

import pytest

import goloop

pytestmark = pytest.mark.usefixtures("no_leftover_goroutines")

var = contextvars.ContextVar("var", default=None)


@pytest.fixture
def fast_gil_switching():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)      # hand the GIL over often, mid-goroutine
    yield
    sys.setswitchinterval(old)


def test_goroutines_on_two_threads_concurrently(fast_gil_switching):
    rounds, per_thread = 300, 20
    barrier = threading.Barrier(2)
    results, errors, trail = {}, [], []

    def body(tag, k):
        var.set((tag, k))
        total = 0
        for i in range(rounds):
            try:
                raise KeyError((tag, k, i))
            except KeyError:
                x = goloop.park(i)                 # park inside except
                assert sys.exc_info()[1].args[0] == (tag, k, i)
            total += x + sum(range(50))            # some bytecode to preempt
            trail.append(tag)
            if i % 50 == 0:
                time.sleep(0)                      # release the GIL outright
            assert var.get() == (tag, k)
            assert goloop.current().name == f"{tag}-{k}"
        return total

    def thread_main(tag):
        try:
            gs = [goloop.Goroutine(lambda k=k: body(tag, k), name=f"{tag}-{k}")
                  for k in range(per_thread)]
            barrier.wait()
            for g in gs:
                assert g.resume() == 0
            out = None
            for i in range(1, rounds + 1):
                out = [g.resume(i) for g in gs]
                assert var.get() is None
                assert sys.exc_info() == (None, None, None)
            results[tag] = out
        except BaseException as e:               # reported below
            errors.append((tag, "".join(traceback.format_exception(e))))

    threads = [threading.Thread(target=thread_main, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    expect = sum(range(1, rounds + 1)) + rounds * sum(range(50))
    assert results == {"a": [expect] * per_thread, "b": [expect] * per_thread}
    # The threads really did take turns while their goroutines ran.
    turns = sum(1 for x, y in zip(trail, trail[1:]) if x != y)
    assert turns >= 2, turns


def test_resuming_from_another_thread_is_refused():
    g = goloop.Goroutine(lambda: goloop.park("p") + "!")
    assert g.resume() == "p"
    caught = []

    def other():
        for call in (lambda: g.resume("x"), lambda: g.throw(ValueError)):
            try:
                call()
            except goloop.GoroutineError as e:
                caught.append(str(e))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert caught == ["cannot resume a goroutine that belongs to another thread"] * 2
    assert g.status == "parked"
    assert g.resume("ok") == "ok!"                  # its own thread still can


def test_goroutine_belongs_to_the_thread_that_started_it():
    g = goloop.Goroutine(lambda: goloop.park(threading.get_ident()))
    box = {}
    ready, done = threading.Event(), threading.Event()

    def starter():
        box["ident"] = g.resume()                  # created on main, started here
        ready.set()
        done.wait(30)
        box["final"] = g.resume("from starter")    # finished by its owner

    t = threading.Thread(target=starter)
    t.start()
    assert ready.wait(30)
    try:
        assert box["ident"] == t.ident
        with pytest.raises(goloop.GoroutineError, match="another thread"):
            g.resume()
        # Its frames can be listed from any thread.
        assert [fs.name for fs in traceback.extract_stack(g.frame)] == ["<lambda>"]
    finally:
        done.set()
        t.join()
    assert box["final"] == "from starter"


def test_goroutine_collected_on_another_thread_is_kept(unraisables):
    g = goloop.Goroutine(lambda: goloop.park("parked") or "done")
    g.resume()
    goid = g.goid
    box = [g]
    del g
    kept_before = len(goloop._goloop._unkillable)

    def drop():
        box.clear()                                 # last reference goes here
        gc.collect()

    t = threading.Thread(target=drop)
    t.start()
    t.join()
    kept = goloop._goloop._unkillable
    assert len(kept) == kept_before + 1 and kept[-1].goid == goid
    assert gc.is_tracked(kept[-1])
    assert len(unraisables) == 1
    assert unraisables[0][0] is goloop.GoroutineError
    assert "parked on another thread was collected" in str(unraisables[0][1])
    # The owner (this thread) can take it back and finish it.
    g = kept.pop()
    assert g.resume() == "done"


def test_registry_and_stats_across_threads():
    base = {id(g) for g in goloop.goroutines()}
    started = threading.Event()
    finish = threading.Event()
    mine = []

    def thread_main():
        gs = [goloop.Goroutine(goloop.park) for _ in range(5)]
        for g in gs:
            g.resume()
        mine.extend(gs)
        started.set()
        finish.wait(30)
        for g in gs:
            g.resume()

    t = threading.Thread(target=thread_main)
    t.start()
    assert started.wait(30)
    try:
        # goroutines() lists those of all threads.
        assert {id(g) for g in goloop.goroutines()} - base == {id(g) for g in mine}
    finally:
        finish.set()
        t.join()
    assert {id(g) for g in goloop.goroutines()} == base
