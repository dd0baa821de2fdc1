"""The native loop core (csrc/loop): its handles, queues, timers and poller
behave as asyncio's, and what asyncio's own Python code and libraries read
of a loop's internals still tells the truth.

Where a behaviour is asyncio's, the test runs it on both loops and compares
(make_loop / KINDS); where it is the core's own (snapshots of _ready, the
Poller), it checks it directly.
"""
import asyncio
import contextvars
import gc
import os
import selectors
import socket
import sys
import threading
import weakref

import pytest

import goloop
from loop_helpers import KINDS, make_loop, normalize, run_on


def _noop(*args):
    pass


@pytest.fixture
def loop():
    loop = goloop.new_event_loop()
    yield loop
    loop.close()


# ---- handles ----------------------------------------------------------------

def test_handles_are_asyncios_own_classes(loop):
    h = loop.call_soon(_noop, 1, 2)
    t = loop.call_later(10, _noop)
    a = loop.call_at(loop.time() + 10, _noop)
    assert type(h) is asyncio.Handle
    assert type(t) is type(a) is asyncio.TimerHandle
    assert h._args == (1, 2) and h._callback is _noop and h._loop is loop
    assert isinstance(h._context, contextvars.Context)
    assert not h.cancelled()
    assert abs(t.when() - (loop.time() + 10)) < 1
    t.cancel()
    assert t.cancelled() and loop._timer_cancelled_count == 1


def test_context_argument_is_used_and_copied_otherwise(loop):
    var = contextvars.ContextVar("v", default="unset")
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "given")
    var.set("current")
    loop.call_soon(lambda: seen.append(var.get()), context=ctx)
    loop.call_soon(lambda: seen.append(var.get()))
    loop.call_later(0, lambda: seen.append(var.get()), context=ctx)
    var.set("changed after")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["given", "current", "given"]


@pytest.mark.parametrize("kind", KINDS)
def test_debug_mode_records_where_a_handle_was_made(kind):
    loop = make_loop(kind)
    loop.set_debug(True)
    try:
        line = sys._getframe().f_lineno + 1
        handles = [loop.call_soon(_noop), loop.call_later(1, _noop), loop.call_at(1, _noop)]
        for h in handles:
            last = h._source_traceback[-1]
            assert (last.lineno, last.name) == (line, "test_debug_mode_records_where_a_handle_was_made")
            assert "created at" in repr(h)
    finally:
        loop.close()


def test_a_callbacks_exception_goes_to_the_exception_handler_as_on_asyncio():
    def main_for(kind):
        async def main():
            loop = asyncio.get_running_loop()
            seen = []
            loop.set_exception_handler(lambda loop, ctx: seen.append(ctx))

            def boom():
                raise ZeroDivisionError("x")

            h = loop.call_soon(boom)
            await asyncio.sleep(0.01)
            (ctx,) = seen
            return ctx["message"], type(ctx["exception"]), ctx["handle"] is h, sorted(ctx)
        return main

    assert run_on("goloop", main_for("goloop")) == run_on("asyncio", main_for("asyncio"))


# ---- the ready queue --------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_callbacks_scheduled_during_a_batch_run_in_the_next(kind):
    loop = make_loop(kind)
    order = []

    def first():
        order.append("first")
        loop.call_soon(lambda: order.append("scheduled by first"))

    try:
        loop.call_soon(first)
        loop.call_soon(lambda: order.append("second"))
        loop._run_once()
        assert order == ["first", "second"]
        loop._run_once()
        assert order == ["first", "second", "scheduled by first"]
    finally:
        loop.close()


def test_ready_and_scheduled_read_as_snapshots(loop):
    a = loop.call_soon(_noop)
    b = loop.call_soon(_noop)
    late = loop.call_later(20, _noop)
    soon = loop.call_later(10, _noop)
    assert list(loop._ready) == [a, b]
    assert loop._scheduled == [soon, late]     # heap order: a valid heapq list
    loop._ready.clear()                         # a snapshot: the queue is intact
    assert len(loop._ready) == 2
    loop._ready = []                            # assigning replaces the queue
    assert len(loop._ready) == 0


# ---- timers -----------------------------------------------------------------

def test_timers_due_at_the_same_time_run_in_the_order_scheduled(loop):
    order = []
    when = loop.time() + 0.01
    for i in range(200):
        loop.call_at(when, order.append, i)
    loop.call_at(when + 0.01, loop.stop)
    loop.run_forever()
    assert order == list(range(200))


def test_many_cancelled_timers_are_compacted_away(loop):
    handles = [loop.call_later(100 + i, _noop) for i in range(1000)]
    for h in handles[:900]:
        h.cancel()
    assert loop._timer_cancelled_count == 900
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(loop._scheduled) == 100
    assert loop._timer_cancelled_count == 0
    assert not any(h._scheduled for h in handles[:900])
    assert all(h._scheduled for h in handles[900:])


@pytest.mark.parametrize("kind", KINDS)
def test_timers_fire_in_time_order(kind):
    async def main():
        loop = asyncio.get_running_loop()
        fired = []
        for delay in (0.03, 0.01, 0.02, 0.0, -1):
            loop.call_later(delay, fired.append, delay)
        await asyncio.sleep(0.06)
        return fired
    assert run_on(kind, main) == [-1, 0.0, 0.01, 0.02, 0.03]


def test_loop_time_is_time_monotonic(loop):
    import time
    a = time.monotonic()
    b = loop.time()
    c = time.monotonic()
    assert a <= b <= c


# ---- the poller -------------------------------------------------------------

def test_the_selector_is_goloops_poller_with_the_selectors_api(loop):
    sel = loop._selector
    assert isinstance(sel, goloop._goloop.Poller)
    a, b = socket.socketpair()
    try:
        loop.add_reader(a, _noop)
        key = sel.get_key(a)
        assert key.fd == a.fileno() and key.events == selectors.EVENT_READ
        reader, writer = key.data
        assert reader._callback is _noop and writer is None
        assert a in sel.get_map()
        # asyncio's own helper that transports' reprs use
        assert asyncio.selector_events._test_selector_event(sel, a.fileno(), selectors.EVENT_READ)
        assert loop.remove_reader(a) is True
        assert loop.remove_reader(a) is False
        with pytest.raises(KeyError):
            sel.get_key(a)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("make_selector", [selectors.EpollSelector, goloop._goloop.Poller])
def test_poller_errors_are_the_selectors_modules(make_selector, tmp_path):
    """The Poller as a selector, against the stdlib's EpollSelector."""
    sel = make_selector()
    a, b = socket.socketpair()
    f = open(tmp_path / "regular", "wb")
    try:
        with pytest.raises(ValueError, match="Invalid file object"):
            sel.register(object(), selectors.EVENT_READ)
        with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
            sel.register(-1, selectors.EVENT_READ)
        with pytest.raises(ValueError, match="Invalid events"):
            sel.register(a, 0)
        with pytest.raises(PermissionError):
            sel.register(f, selectors.EVENT_READ)        # epoll refuses regular files
        with pytest.raises(KeyError):
            sel.get_key(f)                               # ... and nothing stays registered
        sel.register(a, selectors.EVENT_READ, "data")
        with pytest.raises(KeyError):
            sel.register(a, selectors.EVENT_WRITE)
        assert sel.get_key(a).data == "data"
        b.send(b"x")
        (key, events), = sel.select(1)
        assert key.fileobj is a and events == selectors.EVENT_READ
        sel.modify(a, selectors.EVENT_READ | selectors.EVENT_WRITE, "both")
        (key, events), = sel.select(1)
        assert events == selectors.EVENT_READ | selectors.EVENT_WRITE and key.data == "both"
        assert sel.unregister(a).fd == a.fileno()
        with pytest.raises(KeyError):
            sel.unregister(a)
        assert sel.select(0) == []
    finally:
        sel.close()
        f.close()
        a.close()
        b.close()


@pytest.mark.parametrize("kind", KINDS)
def test_add_reader_replaces_and_cancels_the_previous_reader(kind):
    loop = make_loop(kind)
    a, b = socket.socketpair()
    try:
        loop.add_reader(a, _noop)
        first = loop._selector.get_key(a).data[0]
        loop.add_writer(a, _noop)
        loop.add_reader(a, _noop, 1)
        assert first.cancelled()
        key = loop._selector.get_key(a)
        assert key.events == selectors.EVENT_READ | selectors.EVENT_WRITE
        assert key.data[0]._args == (1,)
        assert loop.remove_writer(a) and loop._selector.get_key(a).events == selectors.EVENT_READ
    finally:
        loop.close()
        a.close()
        b.close()


def test_ready_io_is_seen_while_callbacks_keep_the_loop_busy():
    """Polls are skipped while work is ready, but only for a moment: a
    loop that never runs dry still sees its sockets."""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        got = loop.create_future()
        spins = [0]

        def spin():
            spins[0] += 1
            if not got.done():
                loop.call_soon(spin)

        loop.add_reader(a, lambda: got.done() or got.set_result(a.recv(10)))
        loop.call_soon(spin)
        b.send(b"ping")
        data = await asyncio.wait_for(got, 5)
        loop.remove_reader(a)
        a.close()
        b.close()
        return data, spins[0]
    data, spins = run_on("goloop", main)
    assert data == b"ping"
    assert spins < 1_000_000


def test_a_loop_with_another_selector_runs_over_it():
    sel = selectors.SelectSelector()
    loop = goloop.EventLoop(sel)
    try:
        assert loop._selector is sel

        async def main():
            a, b = socket.socketpair()
            a.setblocking(False)
            b.setblocking(False)
            await loop.sock_sendall(a, b"over select()")
            data = await loop.sock_recv(b, 100)
            a.close()
            b.close()
            await asyncio.sleep(0.001)
            return data
        assert loop.run_until_complete(main()) == b"over select()"
    finally:
        loop.close()


# ---- threads, wake-ups ------------------------------------------------------

def _eventfds():
    """{fd: its counter} of this process's eventfds (/proc/self/fdinfo)."""
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[eventfd]":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as info:
                for line in info:
                    if line.startswith("eventfd-count:"):
                        found[int(fd)] = int(line.split()[1], 16)
        except OSError:
            pass
    return found


def _sleep_then_wake(loop):
    """Run loop until another thread's call_soon_threadsafe(loop.stop),
    made 0.2 s after the loop went to sleep in its poll; seconds taken."""
    waker = threading.Timer(0.2, loop.call_soon_threadsafe, (loop.stop,))
    loop.call_soon(waker.start)
    safety = loop.call_later(30, loop.stop)   # the safety net, if it never wakes
    t0 = loop.time()
    loop.run_forever()
    safety.cancel()
    waker.join()
    return loop.time() - t0


def _count_self_pipe_writes(loop):
    writes = []
    real = loop._write_to_self

    def counting_write():
        writes.append(1)
        real()

    loop._write_to_self = counting_write
    return writes


def test_call_soon_threadsafe_wakes_a_sleeping_loop_through_its_eventfd_only_then():
    before = set(_eventfds())
    loop = goloop.new_event_loop()
    try:
        mine = set(_eventfds()) - before
        assert len(mine) == 1, "the Poller has one eventfd"
        wakefd = mine.pop()
        writes = _count_self_pipe_writes(loop)
        for _ in range(100):
            loop.call_soon_threadsafe(_noop)     # not sleeping: no wake-up
        assert _eventfds()[wakefd] == 0
        assert _sleep_then_wake(loop) < 10
        assert _eventfds()[wakefd] == 0           # read back by the woken loop
        assert writes == []                       # the self-pipe is the signals'
    finally:
        loop.close()
    assert wakefd not in _eventfds()


def test_call_soon_threadsafe_with_a_users_selector_writes_the_self_pipe_only_when_sleeping():
    loop = goloop.EventLoop(selectors.DefaultSelector())
    try:
        writes = _count_self_pipe_writes(loop)
        for _ in range(100):
            loop.call_soon_threadsafe(_noop)
        assert writes == []
        assert _sleep_then_wake(loop) < 10
        assert len(writes) == 1
    finally:
        loop.close()


def test_an_instance_run_once_override_is_honoured(loop):
    """Libraries (nest_asyncio-like patches, test doubles) replace _run_once
    on the loop; run_forever calls what is there."""
    calls = []
    real = loop._run_once

    def run_once():
        calls.append(1)
        real()

    loop._run_once = run_once
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls


# ---- cleanup ----------------------------------------------------------------

class _Marker:
    def __call__(self, *args):
        pass


def test_closing_a_loop_frees_its_handles_timers_and_readers():
    loop = goloop.new_event_loop()
    a, b = socket.socketpair()
    markers = [_Marker() for _ in range(4)]
    refs = [weakref.ref(m) for m in markers]
    loop.call_soon(markers[0])
    loop.call_later(100, markers[1])
    h = loop.call_later(100, markers[2])
    h.cancel()
    loop.add_reader(a, markers[3])
    fds_before = len(os.listdir("/proc/self/fd"))
    del markers, h
    loop.close()
    gc.collect()
    assert [r() for r in refs] == [None] * 4
    assert len(os.listdir("/proc/self/fd")) < fds_before   # epoll fd and self-pipe gone
    a.close()
    b.close()


def test_many_loops_leak_no_fds():
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        loop = goloop.new_event_loop()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == before


def test_dropped_handles_are_kept_for_reuse(loop):
    """A Handle that ran and that nobody holds goes to the core's freelist
    (from 3.12 asyncio's Handle keeps its weak references in the object's
    pre-header; the freelist must look there, not give up)."""
    held = [loop.call_soon(_noop, i) for i in range(300)]   # takes all kept ones
    assert goloop.stats()["handles_reusable"] == 0
    del held
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert goloop.stats()["handles_reusable"] == 256         # the freelist's size
    reused = [loop.call_soon(_noop, i) for i in range(20)]
    assert goloop.stats()["handles_reusable"] == 236
    assert all(h._args == (i,) and h._callback is _noop and not h.cancelled()
               for i, h in enumerate(reused))


def test_handles_someone_holds_are_never_reused(loop):
    """The core reuses a Handle object only when nothing else refers to it."""
    held = loop.call_soon(_noop, "held")
    watched = loop.call_soon(_noop, "watched")
    ref = weakref.ref(watched)
    del watched
    loop.call_soon(loop.stop)
    loop.run_forever()
    fresh = [loop.call_soon(_noop, i) for i in range(300)]
    assert all(h is not held for h in fresh)
    assert held._args == ("held",) and held._callback is _noop
    # weakly referenced: freed, not kept for reuse (a reused one would be
    # alive here, with another callback's arguments)
    assert ref() is None
    assert all(h._args == (i,) and not h.cancelled() for i, h in enumerate(fresh))


class _Cyclic:
    ran = []

    def __init__(self, name):
        self.name = name

    def method(self):
        self.ran.append(self.name)


def test_waiting_handles_are_hidden_from_the_collector_safely(loop):
    """Handles waiting in the ready queue or the timer heap are off the
    collector's lists: what they refer to survives a collection, and a cycle
    through one is collected once it has left the queues."""
    pending = _Cyclic("pending")
    loop.call_soon(pending.method)
    timer_target = _Cyclic("timer")
    loop.call_later(0.001, timer_target.method)
    ref_pending, ref_timer = weakref.ref(pending), weakref.ref(timer_target)
    del pending, timer_target
    gc.collect()
    assert ref_pending() is not None and ref_timer() is not None

    cyclic = _Cyclic("cyclic")
    cyclic.handle = loop.call_soon(cyclic.method)       # cyclic -> handle -> method -> cyclic
    cyclic.timer = loop.call_later(0.001, cyclic.method)
    ref_cyclic = weakref.ref(cyclic)
    del cyclic
    loop.run_until_complete(asyncio.sleep(0.01))
    assert sorted(_Cyclic.ran) == ["cyclic", "cyclic", "pending", "timer"]
    gc.collect()
    assert ref_cyclic() is None
    assert ref_pending() is None and ref_timer() is None


def test_a_collection_while_the_loop_runs_keeps_what_waiting_handles_refer_to(loop):
    """While run_forever runs, the loop's traverse leaves its waiting handles
    out (the running loop cannot be garbage): what only they refer to, a
    cycle included, must survive a collection, run, and then be collected."""
    ran = []

    class Target:
        def method(self):
            ran.append(self.me is self)

    async def main():
        target = Target()
        target.me = target                               # a cycle of its own
        loop.call_soon(target.method)
        loop.call_later(0.001, target.method)
        ref = weakref.ref(target)
        del target
        gc.collect()
        assert ref() is not None
        await asyncio.sleep(0.01)
        gc.collect()
        return ref() is None

    assert loop.run_until_complete(main())
    assert ran == [True, True]


def test_an_unclosed_loop_dropped_with_callbacks_waiting_is_collected():
    """loop -> waiting handle -> loop is a cycle the collector must still
    find, with the handles hidden from it while they wait."""
    loop = goloop.new_event_loop()
    loop.call_soon(_noop)
    loop.call_later(100, _noop)
    held = loop.call_later(200, _noop)     # one the caller keeps: the loop stays alive
    ref = weakref.ref(loop)
    del loop
    with pytest.warns(ResourceWarning):
        gc.collect()
        assert ref() is not None           # reachable through `held`
        del held
        gc.collect()
    assert ref() is None


# ---- create_future, create_task, get_debug (the core's factories) ---------


async def _answer(x=1):
    return x


def _factories_scenario(kind):
    """What create_future/create_task/get_debug give, and how they fail, on
    a loop of `kind`: every case the core takes itself and every case it
    hands to BaseEventLoop's methods."""
    seen = []

    def attempt(label, fn):
        try:
            seen.append((label, "ok", fn()))
        except BaseException as e:  # noqa: B902 - the type is compared
            seen.append((label, type(e), normalize(str(e))))

    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        seen.append(("future", type(fut) is asyncio.Future, fut.get_loop() is loop, loop.get_debug()))
        t = loop.create_task(_answer())
        seen.append(("plain", await t, type(t) is asyncio.Task, t.get_loop() is loop))
        t = loop.create_task(_answer(2), name="named")
        seen.append(("named", await t, t.get_name()))
        var = contextvars.ContextVar("var", default="unset")
        ctx = contextvars.copy_context()
        ctx.run(var.set, "in ctx")

        async def read_var():
            return var.get()

        t = loop.create_task(read_var(), name="ctx", context=ctx)
        seen.append(("context", await t, t.get_name()))
        refused = [_answer() for _ in range(3)]
        for label, args, kwargs in [
            ("unknown keyword", (refused[0],), {"colour": 1}),
            ("loop keyword", (refused[1],), {"loop": loop}),
            ("no coroutine", (), {}),
            ("two positionals", (refused[2], "x"), {}),
            ("not a coroutine", (42,), {}),
        ]:
            attempt(label, lambda: loop.create_task(*args, **kwargs))
        for coro in refused:
            coro.close()

        made = []

        def factory(lp, coro, **kwargs):
            made.append(sorted(kwargs))
            return asyncio.Task(coro, loop=lp, **kwargs)

        loop.set_task_factory(factory)
        t = loop.create_task(_answer(4), name="factory")
        seen.append(("factory", await t, t.get_name(), made))
        loop.set_task_factory(None)

        class MyTask(asyncio.Task):
            pass

        class MyFuture(asyncio.Future):
            pass

        # Replaced in asyncio's modules: looked up at each call, as asyncio's
        # Python looks them up.
        real_task, real_future = asyncio.tasks.Task, asyncio.futures.Future
        asyncio.tasks.Task, asyncio.futures.Future = MyTask, MyFuture
        try:
            t = loop.create_task(_answer(5))
            f = loop.create_future()
        finally:
            asyncio.tasks.Task, asyncio.futures.Future = real_task, real_future
        seen.append(("replaced", type(t).__name__, await t, type(f).__name__))
        f.cancel()

        loop.set_debug(True)
        t = loop.create_task(_answer(6))
        seen.append(("debug", loop.get_debug(), await t, t._source_traceback[-1].name))
        loop.set_debug(False)

    with asyncio.Runner(loop_factory=lambda: make_loop(kind)) as runner:
        runner.run(main())
    loop = make_loop(kind)
    loop.close()
    coro = _answer()
    attempt("closed", lambda: loop.create_task(coro))
    coro.close()
    return seen


def test_create_future_and_create_task_do_what_asyncio_does():
    stock = _factories_scenario("asyncio")
    ours = _factories_scenario("goloop")
    assert ours == stock
    assert ("closed", RuntimeError, "Event loop is closed") in stock
    assert ("replaced", "MyTask", 5, "MyFuture") in stock
    assert ("context", "in ctx", "ctx") in stock


def test_create_future_and_create_task_are_the_cores():
    """goloop's loop answers them from C (not BaseEventLoop's Python)."""
    assert goloop.EventLoop.create_task is goloop._goloop.LoopCore.create_task
    assert goloop.EventLoop.create_future is goloop._goloop.LoopCore.create_future
    assert goloop.EventLoop.get_debug is goloop._goloop.LoopCore.get_debug
