"""The registry of started, unfinished goroutines (goroutines()), and the
frames of parked goroutines (g.frame), as used for goroutine dumps."""
import gc
import sys
import traceback

import pytest

import goloop

pytestmark = pytest.mark.usefixtures("no_leftover_goroutines")


def ids(gs):
    return {id(g) for g in gs}


def waiting_for_work(tag):
    got = goloop.park(("waiting", tag))          # PARK-LINE
    return got


def worker_loop(tag):
    return ("done", waiting_for_work(tag))


def test_goroutines_lists_started_unfinished_ones():
    base = ids(goloop.goroutines())
    live0 = goloop.stats()["goroutines_live"]
    idle = goloop.Goroutine(lambda: None)
    parked = [goloop.Goroutine(lambda i=i: worker_loop(i)) for i in range(5)]
    assert ids(goloop.goroutines()) == base            # idle ones are not listed
    for g in parked:
        g.resume()
    listed = ids(goloop.goroutines()) - base
    assert listed == ids(parked)
    assert goloop.stats()["goroutines_live"] == live0 + 5
    assert all(g.status == "parked" for g in goloop.goroutines() if id(g) in listed)

    # A running goroutine is listed too, and so is the one that resumed it.
    def look():
        return ids(goloop.goroutines())

    outer = goloop.Goroutine(lambda: goloop.Goroutine(look).resume() | look())
    seen = outer.resume()
    assert id(outer) in seen

    for i, g in enumerate(parked[:3]):
        assert g.resume(i) == ("done", i)
    assert ids(goloop.goroutines()) - base == ids(parked[3:])
    assert goloop.stats()["goroutines_live"] == live0 + 2
    for g in parked[3:]:
        g.resume()
    assert ids(goloop.goroutines()) == base
    assert goloop.stats()["goroutines_live"] == live0
    del idle


def test_frame_of_parked_goroutine():
    g = goloop.Goroutine(lambda: worker_loop("x"), name="frame-test")
    assert g.frame is None                             # idle
    g.resume()
    f = g.frame
    assert f is g.frame                                # the same object while parked
    assert f.f_code is waiting_for_work.__code__
    assert f.f_locals == {"tag": "x"}
    import inspect

    lines, start = inspect.getsourcelines(waiting_for_work)
    park_line = start + next(i for i, t in enumerate(lines) if "PARK-LINE" in t)
    assert f.f_lineno == park_line

    stack = traceback.extract_stack(f)
    names = [fs.name for fs in stack]
    # The innermost entry is the function that called park(); nothing of the
    # parent's stack (this test, pytest) is above the goroutine's function.
    assert names == ["<lambda>", "worker_loop", "waiting_for_work"]
    assert stack[-1].lineno == park_line
    assert stack[-1].line == 'got = goloop.park(("waiting", tag))          # PARK-LINE'
    assert sys._getframe().f_code.co_name not in names

    assert g.resume("v") == ("done", "v")
    assert g.frame is None                             # finished
    # The frame object outlives the goroutine's run safely.
    assert f.f_code is waiting_for_work.__code__
    assert f.f_locals["got"] == "v"
    assert f.f_back is not None and f.f_back.f_code is worker_loop.__code__


def test_frame_is_none_while_running():
    def body():
        return goloop.current().frame

    assert goloop.Goroutine(body).resume() is None


def test_frame_changes_as_the_goroutine_moves():
    def step_a():
        goloop.park("a")

    def step_b():
        goloop.park("b")

    def body():
        step_a()
        step_b()

    g = goloop.Goroutine(body)
    g.resume()
    fa = g.frame
    assert fa.f_code.co_name == "step_a"
    g.resume()
    fb = g.frame
    assert fb.f_code.co_name == "step_b" and fb is not fa
    assert fb.f_back.f_code.co_name == "body"
    g.resume()


def test_dump_of_all_parked_goroutines():
    def gen_parker():
        yield goloop.park("in generator")

    def through_generator():
        return list(gen_parker())

    gs = [goloop.Goroutine(lambda i=i: worker_loop(i), name=f"w{i}") for i in range(3)]
    gs.append(goloop.Goroutine(through_generator, name="gen"))
    for g in gs:
        g.resume()
    dump = {}
    for g in goloop.goroutines():
        if g in gs:
            dump[g.name] = [fs.name for fs in traceback.extract_stack(g.frame)]
    assert dump == {
        "w0": ["<lambda>", "worker_loop", "waiting_for_work"],
        "w1": ["<lambda>", "worker_loop", "waiting_for_work"],
        "w2": ["<lambda>", "worker_loop", "waiting_for_work"],
        "gen": ["through_generator", "gen_parker"],
    }
    text = "".join(traceback.format_stack(gs[0].frame))
    assert "waiting_for_work" in text and "PARK-LINE" in text
    for g in gs:
        g.resume()
    assert not set(gs) & set(goloop.goroutines())


def test_frames_of_nested_parked_goroutines_are_separate():
    def inner():
        goloop.park("inner")

    def outer():
        child = goloop.Goroutine(inner)
        child.resume()
        goloop.park(child)
        child.resume()

    g = goloop.Goroutine(outer)
    child = g.resume()
    assert [fs.name for fs in traceback.extract_stack(child.frame)] == ["inner"]
    assert [fs.name for fs in traceback.extract_stack(g.frame)] == ["outer"]
    g.resume()
    assert child.status == "finished"


def test_finished_and_failed_goroutines_leave_the_registry():
    base = ids(goloop.goroutines())

    def fails():
        goloop.park()
        raise ValueError

    gs = [goloop.Goroutine(fails) for _ in range(10)]
    for g in gs:
        g.resume()
    assert ids(gs) <= ids(goloop.goroutines())
    for g in gs[:5]:
        with pytest.raises(ValueError):
            g.resume()
    for g in gs[5:7]:
        assert g.throw(goloop.GoroutineExit) is None
    del g
    del gs[5:]                                        # dropped: unwound
    gc.collect()
    assert ids(goloop.goroutines()) == base
    assert all(g.status == "finished" for g in gs)
