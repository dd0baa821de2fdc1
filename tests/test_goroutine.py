"""The Goroutine type: switching, values, exceptions, nesting, generators and
coroutines on goroutines, parking inside `with` and `try/finally`, and
gc.collect() while goroutines are parked."""
import contextlib
import gc
import mmap
import sys
import traceback
import types
import weakref

import pytest

import goloop

pytestmark = pytest.mark.usefixtures("no_leftover_goroutines")


def line_of(func, marker):
    """Line number of the source line of `func` containing `marker`."""
    import inspect

    lines, start = inspect.getsourcelines(func)
    hits = [start + i for i, text in enumerate(lines) if marker in text]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


# ---- values both ways ---------------------------------------------------


def test_values_travel_both_ways():
    log = []

    def body(a):
        log.append(("start", a, goloop.current() is g))
        x = goloop.park(a + 1)
        log.append(("got", x))
        y = goloop.park([x, "again"])
        log.append(("got", y))
        return {"result": y}

    g = goloop.Goroutine(lambda: body(10))
    assert g.status == "idle"
    assert g.resume("ignored: the first resume's value is not used") == 11
    assert g.status == "parked"
    sentinel = object()
    assert g.resume(sentinel) == [sentinel, "again"]
    assert g.resume(None) == {"result": None}
    assert g.status == "finished"
    assert log == [("start", 10, True), ("got", sentinel), ("got", None)]


def test_defaults_are_none():
    def body():
        assert goloop.park() is None      # resume() without a value
        goloop.park()                     # park() without a value

    g = goloop.Goroutine(body)
    assert g.resume() is None
    assert g.resume() is None
    assert g.resume() is None             # the function returned None
    assert g.status == "finished"


def test_identity_and_refcount_of_transferred_objects():
    obj = object()
    before = sys.getrefcount(obj)

    def body():
        got = goloop.park(obj)
        assert got is obj
        return got

    for _ in range(3):
        g = goloop.Goroutine(body)
        assert g.resume() is obj
        assert g.resume(obj) is obj
    del g
    assert sys.getrefcount(obj) == before


def test_many_switches_ping_pong():
    n = 20000

    def body():
        total = 0
        v = goloop.park(0)
        while v is not None:
            total += v
            v = goloop.park(total)
        return total

    g = goloop.Goroutine(body)
    assert g.resume() == 0
    expect = 0
    for i in range(1, n):
        expect += i
        assert g.resume(i) == expect
    assert g.resume(None) == expect
    assert g.status == "finished"


# ---- attributes --------------------------------------------------------


def test_status_current_and_attributes(default_stack_size):
    seen = {}

    def body():
        me = goloop.current()
        seen["current"] = me
        seen["status"] = me.status
        seen["frame"] = me.frame            # not parked: None
        goloop.park()

    g = goloop.Goroutine(body)
    assert goloop.current() is None
    assert g.name == body.__qualname__
    assert g.stack_size == goloop.get_default_stack_size()
    assert g.frame is None
    assert repr(g) == f"<Goroutine {g.goid} {body.__qualname__!r} idle>"
    g.resume()
    assert seen == {"current": g, "status": "running", "frame": None}
    assert repr(g).endswith("parked>")
    g.resume()
    assert g.status == "finished"
    assert repr(g).endswith("finished>")
    assert goloop.current() is None

    asked = goloop._goloop.MIN_STACK_SIZE + 1
    h = goloop.Goroutine(body, name="worker-7", stack_size=asked)
    assert h.name == "worker-7"
    assert h.goid > g.goid
    page = mmap.PAGESIZE
    assert h.stack_size == (asked + page - 1) // page * page   # whole pages


def test_name_of_callables_without_qualname():
    import functools

    p = functools.partial(lambda x: x, 5)
    g = goloop.Goroutine(p)
    assert g.name == repr(p)
    assert g.resume() == 5
    assert goloop.Goroutine(len.__call__, name="x").name == "x"


def test_weakref_to_goroutine():
    g = goloop.Goroutine(lambda: goloop.park())
    r = weakref.ref(g)
    g.resume()
    assert r() is g
    del g
    gc.collect()
    assert r() is None


# ---- exceptions --------------------------------------------------------


def test_exception_propagates_with_traceback():
    def failing_step(x):
        y = x * 2
        raise ValueError(f"bad value {y}")  # RAISE-HERE

    def goroutine_body():
        v = goloop.park("parked once")
        failing_step(v)                     # CALL-HERE

    g = goloop.Goroutine(goroutine_body)
    assert g.resume() == "parked once"
    with pytest.raises(ValueError, match="bad value 42") as info:
        g.resume(21)
    assert g.status == "finished"

    frames = traceback.extract_tb(info.value.__traceback__)
    names = [f.name for f in frames]
    # From the resume() call in this test, down into the goroutine.
    assert names[0] == "test_exception_propagates_with_traceback"
    assert names[-2:] == ["goroutine_body", "failing_step"]
    assert frames[-1].lineno == line_of(failing_step, "RAISE-HERE")
    assert frames[-1].line == 'raise ValueError(f"bad value {y}")  # RAISE-HERE'
    assert frames[-2].lineno == line_of(goroutine_body, "CALL-HERE")
    assert info.value.__context__ is None
    # The formatted traceback shows it as well.
    text = "".join(traceback.format_exception(info.value))
    assert "in goroutine_body" in text and "in failing_step" in text
    assert "ValueError: bad value 42" in text

    with pytest.raises(goloop.GoroutineError, match="finished"):
        g.resume()


def test_exception_on_first_resume_and_base_exceptions():
    def body():
        raise KeyboardInterrupt("from goroutine")

    g = goloop.Goroutine(body)
    with pytest.raises(KeyboardInterrupt, match="from goroutine") as info:
        g.resume()
    assert traceback.extract_tb(info.value.__traceback__)[-1].name == "body"

    def exits():
        sys.exit(3)

    with pytest.raises(SystemExit) as info:
        goloop.Goroutine(exits).resume()
    assert info.value.code == 3


def test_exception_chaining_inside_goroutine():
    def body():
        try:
            goloop.park()
            {}["missing"]
        except KeyError as e:
            raise RuntimeError("wrapped") from e

    g = goloop.Goroutine(body)
    g.resume()
    with pytest.raises(RuntimeError, match="wrapped") as info:
        g.resume()
    assert isinstance(info.value.__cause__, KeyError)
    assert isinstance(info.value.__context__, KeyError)


def test_throw_into_parked_goroutine():
    def park_line_holder():
        try:
            goloop.park("waiting")            # PARK-HERE
        except ValueError as e:
            got = goloop.park(("caught", str(e)))
        goloop.park(got)
        return "done"

    g = goloop.Goroutine(park_line_holder)
    assert g.resume() == "waiting"
    assert g.throw(ValueError("v1")) == ("caught", "v1")
    assert g.resume("next") == "next"
    with pytest.raises(OSError) as info:
        g.throw(OSError)                       # a class is instantiated
    assert type(info.value) is OSError
    assert g.status == "finished"
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == "park_line_holder"

    g = goloop.Goroutine(park_line_holder)
    g.resume()
    exc = KeyError("uncaught")
    with pytest.raises(KeyError) as info:
        g.throw(exc)
    assert info.value is exc
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].lineno == line_of(park_line_holder, "PARK-HERE")


def test_throw_into_idle_goroutine_never_runs_it():
    ran = []
    g = goloop.Goroutine(lambda: ran.append(1))
    with pytest.raises(ValueError):
        g.throw(ValueError("early"))
    assert g.status == "finished" and ran == []
    # GoroutineExit into an idle goroutine: it just ends, quietly.
    g = goloop.Goroutine(lambda: ran.append(1))
    assert g.throw(goloop.GoroutineExit) is None
    assert g.status == "finished" and ran == []


def test_goroutine_exit_thrown_explicitly():
    log = []

    def body():
        try:
            goloop.park()
        except goloop.GoroutineExit:
            log.append("exit")
            raise
        finally:
            log.append("finally")

    g = goloop.Goroutine(body)
    g.resume()
    assert g.throw(goloop.GoroutineExit()) is None    # swallowed: it did exit
    assert g.status == "finished"
    assert log == ["exit", "finally"]
    assert issubclass(goloop.GoroutineExit, BaseException)
    assert not issubclass(goloop.GoroutineExit, Exception)


# ---- nesting -------------------------------------------------------------


def test_nested_goroutines():
    log = []

    def inner():
        log.append(("inner sees", goloop.current() is g2))
        v = goloop.park("inner parked")
        log.append(("inner got", v))
        v = goloop.park("inner parked again")
        return ("inner done", v)

    def outer():
        log.append(("outer sees", goloop.current() is g1))
        r = g2.resume()                       # nested: back here when g2 parks
        log.append(("outer got", r, goloop.current() is g1))
        r = g2.resume("from outer")
        v = goloop.park(("outer parked", r))  # g2 stays parked
        return ("outer done", v)

    g1 = goloop.Goroutine(outer)
    g2 = goloop.Goroutine(inner)
    assert g1.resume() == ("outer parked", "inner parked again")
    assert (g1.status, g2.status) == ("parked", "parked")
    # g2 was started and resumed by g1; now the main stack resumes it.
    assert g2.resume("from main") == ("inner done", "from main")
    assert g1.resume("bye") == ("outer done", "bye")
    assert log == [
        ("outer sees", True),
        ("inner sees", True),
        ("outer got", "inner parked", True),
        ("inner got", "from outer"),
    ]


def test_resumed_from_a_different_goroutine_than_its_starter():
    def worker():
        a = goloop.park(("started by", goloop.current().name))
        b = goloop.park(("got", a))
        return ("finished with", b)

    w = goloop.Goroutine(worker, name="worker")

    def starter():
        return w.resume()

    def other(value):
        r1 = w.resume(value)
        mine = goloop.park(r1)           # park while w is parked too
        return (mine, w.resume("last"))

    assert goloop.Goroutine(starter, name="starter").resume() == ("started by", "worker")
    o = goloop.Goroutine(lambda: other("x"), name="other")
    assert o.resume() == ("got", "x")
    assert o.resume("o") == ("o", ("finished with", "last"))
    assert w.status == "finished" and o.status == "finished"


def test_deeply_nested_chain_of_goroutines():
    depth = 150

    def level(n):
        if n == depth:
            return goloop.park(n)
        child = goloop.Goroutine(lambda: level(n + 1))
        got = child.resume()
        assert goloop.current().status == "running"
        back = goloop.park(got)
        return child.resume(back) + 1

    g = goloop.Goroutine(lambda: level(0))
    assert g.resume() == depth        # passed up through every level's park
    # One resume travels down the chain, each level resuming its child.
    assert g.resume(0) == depth
    assert g.status == "finished"


def test_park_returns_to_whoever_resumed():
    order = []

    def a():
        order.append("a1")
        goloop.park()
        order.append("a2")

    ga = goloop.Goroutine(a)

    def b():
        ga.resume()            # a parks: control comes back to b, not main
        order.append("b")

    goloop.Goroutine(b).resume()
    ga.resume()
    assert order == ["a1", "b", "a2"]


# ---- generators and coroutines on a goroutine --------------------------------


def test_generator_driven_inside_goroutine_with_parks():
    def gen(n):
        for i in range(n):
            got = yield i
            # a park inside the generator's own frame
            got2 = goloop.park(("gen parked", i, got))
            assert got2 == ("ok", i)

    def body():
        out = []
        it = gen(3)
        out.append(next(it))
        goloop.park("between")
        for k in range(1, 4):
            try:
                out.append(it.send(k * 10))
            except StopIteration:
                out.append("stop")
            goloop.park(("between", k))
        return out

    g = goloop.Goroutine(body)
    assert g.resume() == "between"
    steps = []
    r = g.resume()
    while g.status == "parked":
        steps.append(r)
        if isinstance(r, tuple) and r[0] == "gen parked":
            r = g.resume(("ok", r[1]))
        else:
            r = g.resume()
    assert r == [0, 1, 2, "stop"]
    assert steps == [
        ("gen parked", 0, 10), ("between", 1),
        ("gen parked", 1, 20), ("between", 2),
        ("gen parked", 2, 30), ("between", 3),
    ]


def test_yield_from_and_generator_created_outside():
    def sub():
        x = yield "s1"
        goloop.park(("sub parked", x))
        y = yield "s2"
        return x + y

    def outer_gen():
        r = yield from sub()
        yield ("total", r)

    it = outer_gen()
    assert next(it) == "s1"               # started on the main stack

    def body():
        a = it.send(1)                    # continued on a goroutine ...
        b = it.send(2)
        return a, b

    g = goloop.Goroutine(body)
    assert g.resume() == ("sub parked", 1)  # ... and parked inside sub()
    assert g.resume() == ("s2", ("total", 3))


def test_coroutine_driven_inside_goroutine():
    @types.coroutine
    def suspend(v):
        return (yield v)

    async def coro():
        a = await suspend("first await")
        b = goloop.park(("sync park inside coroutine", a))
        c = await suspend(("second await", b))
        return a + b + c

    def body():
        c = coro()
        try:
            v = c.send(None)
            while True:
                got = goloop.park(("driver", v))
                v = c.send(got)
        except StopIteration as e:
            return ("result", e.value)

    g = goloop.Goroutine(body)
    assert g.resume() == ("driver", "first await")
    assert g.resume(1) == ("sync park inside coroutine", 1)
    assert g.resume(2) == ("driver", ("second await", 2))
    assert g.resume(3) == ("result", 6)


def test_coroutine_closed_while_goroutine_parked():
    log = []

    async def coro():
        try:
            goloop.park("in coro")
        finally:
            log.append("coro finally")

    def body():
        c = coro()
        try:
            c.send(None)
        except StopIteration:
            pass

    g = goloop.Goroutine(body)
    assert g.resume() == "in coro"
    with pytest.raises(ZeroDivisionError):
        g.throw(ZeroDivisionError)
    assert log == ["coro finally"]


# ---- with, try/finally, collection ---------------------------------------------


def test_park_inside_with_and_try_finally():
    log = []

    @contextlib.contextmanager
    def managed(tag):
        log.append(("enter", tag))
        try:
            yield tag
        except BaseException as e:
            log.append(("exit with", tag, type(e).__name__))
            raise
        else:
            log.append(("exit", tag))

    class Lock:
        def __enter__(self):
            log.append("lock")
            return self

        def __exit__(self, *exc):
            log.append(("unlock", exc[0].__name__ if exc[0] else None))

    def body():
        with managed("a") as tag, Lock():
            try:
                v = goloop.park(tag)
                log.append(("got", v))
                goloop.park("inner")
            finally:
                log.append("finally")
        return "out"

    g = goloop.Goroutine(body)
    assert g.resume() == "a"
    assert g.resume(1) == "inner"
    assert g.resume() == "out"
    assert log == [("enter", "a"), "lock", ("got", 1), "finally",
                   ("unlock", None), ("exit", "a")]

    # Dropped while parked inside them: GoroutineExit unwinds all three.
    log.clear()
    g = goloop.Goroutine(body)
    g.resume()
    del g
    gc.collect()
    assert log == [("enter", "a"), "lock", "finally",
                   ("unlock", "GoroutineExit"), ("exit with", "a", "GoroutineExit")]


def test_gc_collect_while_parked():
    class Node:
        def __init__(self, i):
            self.i = i
            self.me = self                     # a cycle

    results = []

    def body(i):
        local_cycle = Node(i)
        garbage = [Node(-1) for _ in range(50)]
        del garbage
        wr = weakref.ref(local_cycle)
        for round_ in range(3):
            got = goloop.park(i)
            assert wr() is local_cycle and local_cycle.me.i == i
        results.append((i, got))
        return i

    gs = [goloop.Goroutine(lambda i=i: body(i)) for i in range(100)]
    assert [g.resume() for g in gs] == list(range(100))
    for round_ in range(3):
        gc.collect()
        assert all(g.status == "parked" for g in gs)
        for i, g in enumerate(gs):
            r = g.resume(("round", round_))
            assert r == i
    assert sorted(results) == [(i, ("round", 2)) for i in range(100)]
    assert all(g.status == "finished" for g in gs)


def test_gc_collect_from_inside_goroutine_with_others_parked():
    others = [goloop.Goroutine(lambda: goloop.park([object()] * 3)) for _ in range(20)]
    for o in others:
        o.resume()

    def body():
        for _ in range(3):
            assert gc.collect() >= 0
            goloop.park()
        return "ok"

    g = goloop.Goroutine(body)
    while g.status != "finished":
        r = g.resume()
    assert r == "ok"
    for o in others:
        o.resume()
    assert all(o.status == "finished" for o in others)


def test_parked_goroutine_in_unreachable_cycle_is_unwound_by_gc():
    log = []

    class Holder:
        pass

    def body():
        try:
            goloop.park()
        finally:
            log.append("finally")

    h = Holder()
    h.me = h
    h.g = goloop.Goroutine(body)
    h.g.resume()
    del h
    gc.collect()
    assert log == ["finally"]


# ---- signals ---------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGUSR1"), reason="needs SIGUSR1")
def test_signal_handler_parks_the_goroutine_it_interrupted():
    # The mechanism preemption will use: a Python signal handler runs on the
    # interrupted goroutine's stack and parks it there.
    import os
    import signal

    log = []

    def handler(signum, frame):
        log.append(("handler", frame.f_code.co_name, goloop.current() is g))
        log.append(("handler resumed", goloop.park("preempted")))

    def body():
        x = 0
        for i in range(3):
            x += i
            if i == 1:
                os.kill(os.getpid(), signal.SIGUSR1)
                x += 100
        return x

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        g = goloop.Goroutine(body)
        assert g.resume() == "preempted"
        assert log == [("handler", "body", True)]
        assert g.resume("go on") == 103
        assert log[-1] == ("handler resumed", "go on")
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_keyboard_interrupt_on_a_goroutine_propagates():
    import signal

    def body():
        signal.raise_signal(signal.SIGINT)     # default handler: KeyboardInterrupt

    # Python leaves SIGINT ignored when the process started with it ignored
    # (a run in the background of a shell without job control, as CI's may
    # be): install the handler Python installs in a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        g = goloop.Goroutine(body)
        with pytest.raises(KeyboardInterrupt):
            g.resume()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert g.status == "finished"
