"""Per-stack interpreter state stays with its stack: contextvars (each
goroutine has its own Context; context= is honoured), sys.exc_info() (the
exception being handled), the frame chain, and the recursion counters."""
import contextvars
import sys
import threading
import traceback

import pytest

import goloop

pytestmark = pytest.mark.usefixtures("no_leftover_goroutines")

var = contextvars.ContextVar("var", default="default")


# ---- contextvars ------------------------------------------------------------


def test_var_set_in_goroutine_not_seen_by_parent_and_vice_versa():
    token = var.set("parent")
    try:
        assert var.get() == "parent"         # primes ContextVar's cache

        def body():
            seen = [var.get()]               # a goroutine starts with a Context of its own
            var.set("child")
            seen.append(var.get())
            seen.append(goloop.park("parked"))
            seen.append(var.get())           # still its own after the parent ran
            return seen

        g = goloop.Goroutine(body)
        assert g.resume() == "parked"
        assert var.get() == "parent"         # the child's set() did not leak out
        var.set("parent 2")
        assert g.resume(var.get()) == ["default", "child", "parent 2", "child"]
        assert var.get() == "parent 2"
    finally:
        var.reset(token)


def test_two_goroutines_interleaved_each_see_their_own():
    def body(tag):
        var.set(tag)
        for i in range(5):
            assert var.get() == tag
            got = goloop.park(var.get())
            assert got == i
            var.set(f"{tag}{i}")
            tag = f"{tag}{i}"
        return var.get()

    ga = goloop.Goroutine(lambda: body("a"))
    gb = goloop.Goroutine(lambda: body("b"))
    assert ga.resume() == "a"
    assert gb.resume() == "b"
    ra = rb = None
    for i in range(5):
        ra = ga.resume(i)
        assert var.get() == "default"
        rb = gb.resume(i)
    assert ra == "a01234" and rb == "b01234"
    assert (ga.status, gb.status) == ("finished", "finished")


def test_context_argument_is_honoured():
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in ctx")
    other = contextvars.ContextVar("other")

    def body():
        seen = var.get()
        var.set("changed by goroutine")
        other.set(1)
        goloop.park(seen)
        return contextvars.copy_context().get(other)

    g = goloop.Goroutine(body, context=ctx)
    assert g.resume() == "in ctx"
    # The goroutine ran in ctx itself (not a copy): its set() is in ctx.
    assert ctx[var] == "changed by goroutine"
    assert ctx[other] == 1
    assert var.get() == "default" and other.get(None) is None
    assert g.resume() == 1


def test_parent_context_copy_is_inherited_only_when_asked():
    token = var.set("parent value")
    try:
        g1 = goloop.Goroutine(var.get)
        g2 = goloop.Goroutine(var.get, context=contextvars.copy_context())
        assert g1.resume() == "default"
        assert g2.resume() == "parent value"
    finally:
        var.reset(token)


def test_context_run_inside_goroutine_across_parks():
    inner_ctx = contextvars.Context()

    def in_ctx():
        var.set("inner")
        got = goloop.park(var.get())
        return (got, var.get())

    def body():
        var.set("goroutine")
        r = inner_ctx.run(in_ctx)
        return (r, var.get())

    g = goloop.Goroutine(body)
    assert g.resume() == "inner"
    # The parent runs something in a Context of its own meanwhile.
    parent_ctx = contextvars.Context()
    assert parent_ctx.run(lambda: (var.set("p"), var.get())[1]) == "p"
    assert parent_ctx.run(g.resume, "v") == (("v", "inner"), "goroutine")
    assert var.get() == "default"


def test_contextvars_cache_is_invalidated_by_switches():
    # ContextVar.get() caches per (thread state, context version): a switch
    # that did not bump the version would let a stale cached value through.
    c = contextvars.ContextVar("c")

    def body():
        vals = []
        for i in range(50):
            vals.append(c.get("unset"))
            c.set(("g", i))
            vals.append(c.get())
            goloop.park()
        return vals

    g = goloop.Goroutine(body)
    g.resume()
    for i in range(50):
        c.set(("p", i))
        assert c.get() == ("p", i)
        r = g.resume()
        assert c.get() == ("p", i)
    assert r[0] == "unset"
    assert r[1::2] == [("g", i) for i in range(50)]
    assert r[2::2] == [("g", i) for i in range(49)]


# ---- sys.exc_info() ------------------------------------------------------------


def test_exception_handled_in_goroutine_does_not_leak_to_parent():
    def body():
        try:
            raise KeyError("goroutine's")
        except KeyError:
            before = repr(sys.exc_info()[1])
            goloop.park(before)                # parked inside the except block
            after = repr(sys.exc_info()[1])    # still its own exception
            goloop.park(after)
        return sys.exc_info()

    g = goloop.Goroutine(body)
    assert g.resume() == "KeyError(\"goroutine's\")"
    assert sys.exc_info() == (None, None, None)
    try:
        raise OSError("parent's")
    except OSError:
        assert g.resume() == "KeyError(\"goroutine's\")"
        assert repr(sys.exc_info()[1]) == "OSError(\"parent's\")"
    assert sys.exc_info() == (None, None, None)
    assert g.resume() == (None, None, None)


def test_parent_handled_exception_is_not_visible_in_goroutine():
    def body():
        seen = [sys.exc_info()[1]]
        try:
            raise                                  # nothing to re-raise here
        except RuntimeError as e:
            seen.append(type(e).__name__)
        try:
            raise ValueError("goroutine")
        except ValueError as e:
            seen.append(e.__context__)            # no implicit chaining to the parent's
        return seen

    try:
        raise LookupError("parent")
    except LookupError:
        seen = goloop.Goroutine(body).resume()
        assert isinstance(sys.exc_info()[1], LookupError)
    assert seen == [None, "RuntimeError", None]


def test_exception_out_of_resume_inside_parent_except_block():
    def body():
        raise ValueError("from goroutine")

    try:
        raise LookupError("parent")
    except LookupError:
        with pytest.raises(ValueError) as info:
            goloop.Goroutine(body).resume()
        assert isinstance(sys.exc_info()[1], LookupError)


def test_nested_excepts_across_parks():
    def body():
        try:
            raise KeyError("a")
        except KeyError:
            try:
                raise IndexError("b")
            except IndexError:
                goloop.park(type(sys.exc_info()[1]).__name__)
            goloop.park(type(sys.exc_info()[1]).__name__)
        return sys.exc_info()[1]

    g = goloop.Goroutine(body)
    assert g.resume() == "IndexError"
    try:
        raise TypeError
    except TypeError:
        assert g.resume() == "KeyError"
        assert sys.exc_info()[0] is TypeError
    assert g.resume() is None
    assert sys.exc_info()[1] is None


# ---- frames, recursion counters, thread-owned state -------------------------------------


def test_goroutine_sees_only_its_own_frames():
    def body():
        f = sys._getframe()
        assert f.f_back is None                # the parent's frames are not above it
        return [fs.name for fs in traceback.extract_stack()]

    def start():
        return goloop.Goroutine(body).resume()

    assert start() == ["body"]
    # And the parent's own stack is intact after the switch back.
    assert sys._getframe().f_code.co_name == "test_goroutine_sees_only_its_own_frames"
    assert "start" not in [fs.name for fs in traceback.extract_stack()]


def test_recursion_counters_are_per_stack(recursion_depth):
    # A goroutine parked deep in recursion does not eat the parent's budget,
    # and the parent recursing deeply does not eat the goroutine's.
    limit = sys.getrecursionlimit()

    def down(n, at_bottom):
        return at_bottom() if n == 0 else down(n - 1, at_bottom)

    g = goloop.Goroutine(lambda: down(limit // 2, lambda: goloop.park("deep") or recursion_depth()))
    assert g.resume() == "deep"
    mine_before = recursion_depth()
    assert mine_before > limit // 2                  # not reduced by the goroutine's depth
    # The goroutine, resumed from deep recursion here, still has exactly
    # its own half left.
    r = down(limit // 3, lambda: g.resume(False))
    assert limit // 2 - 20 <= r <= limit // 2 + 5, (r, limit)
    assert recursion_depth() == mine_before


def test_threading_local_belongs_to_the_thread():
    local = threading.local()
    local.x = "thread"

    def body():
        seen = local.x
        local.x = "set on goroutine"
        return seen

    assert goloop.Goroutine(body).resume() == "thread"
    assert local.x == "set on goroutine"
