"""Deep recursion on a goroutine raises RecursionError and never crashes.

The glue gives each goroutine a C recursion budget derived from its stack size
(goroutine.c c_budget(), pystate.c gl_pystate_bytes_per_c_level() = 6 KiB per
C-mediated level).  Pure-Python recursion uses no C stack on 3.11+, but on 3.11
Python and C levels share one counter, so there the budget also caps Python
depth; with the default 8 MiB stack it must stay above the default recursion
limit so that sys.getrecursionlimit() stays honest.  From 3.14 CPython checks
the C stack by address instead, against limits the glue sets for each
goroutine's own stack (pystate.h), so there the recursion cases below end in
RecursionError on any stack size without a budget.

The crash-prone cases run in a subprocess: a crash fails the test, with the
child's output in the message, instead of killing pytest.
"""
import signal
import sys

import pytest

import goloop
from goloop._goloop import _stack_depth

pytestmark = pytest.mark.usefixtures("no_leftover_goroutines")

# Bytes of C stack per C-mediated recursion level the glue budgets for.
GLUE_BYTES_PER_C_LEVEL = 6 * 1024

RECURSE_SCRIPT = r"""
import json, sys
import goloop

kind, size = sys.argv[1], sys.argv[2]
stack_size = None if size == "default" else int(size)
depth = 0

def pure(n):
    global depth
    depth = n
    return pure(n + 1) + 1

class Repr:
    def __init__(self, n):
        self.n = n
    def __repr__(self):
        global depth
        depth = self.n
        return repr(Repr(self.n + 1))

def sort_key(n):
    global depth
    depth = n
    return sorted([n + 1], key=sort_key)

def mapped(n):
    global depth
    depth = n
    return list(map(mapped, [n + 1]))

RUN = {
    "pure": lambda: pure(0),
    "repr": lambda: repr(Repr(0)),
    "sorted": lambda: sort_key(0),
    "map": lambda: mapped(0),
}[kind]

def main_depth():
    n = 0
    def f():
        nonlocal n
        n += 1
        f()
    try:
        f()
    except RecursionError:
        return n

def body():
    out = []
    for attempt in range(3):
        try:
            RUN()
        except RecursionError:
            out.append(["RecursionError", depth])
        else:
            out.append(["no error", depth])
        # The goroutine is still fine afterwards: it parks and comes back.
        assert goloop.park(attempt) == attempt
    return out

base = main_depth()
g = goloop.Goroutine(body, stack_size=stack_size)
r = g.resume()
for i in range(3):
    assert r == i, (r, i)
    r = g.resume(r)
attempts = r
print(json.dumps({
    "attempts": attempts,
    "stack_size": g.stack_size,
    "status": g.status,
    "main_depth_before": base,
    "main_depth_after": main_depth(),
}))
"""

KINDS = ["pure", "repr", "sorted", "map"]
# 64 KiB, or the smallest stack this interpreter takes if more (a debug 3.14+)
SMALL = max(65536, goloop._goloop.MIN_STACK_SIZE)
SIZES = [str(SMALL), "1048576", "default"]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_deep_recursion_raises_recursion_error(run_python, kind, size):
    import json

    proc = run_python(RECURSE_SCRIPT, kind, size, timeout=120)
    assert proc.returncode == 0, (
        f"{kind} recursion on a {size} stack: exit status {proc.returncode}"
        f"\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "finished"
    attempts = result["attempts"]
    # Every attempt hits RecursionError after recursing, and no attempt gets
    # less deep than the one before: the counters were given back each time
    # (and across the parks in between).  The first attempt may stop a few
    # levels earlier: unspecialized bytecode takes generic, deeper C paths
    # until the adaptive interpreter has warmed up.
    assert [a[0] for a in attempts] == ["RecursionError"] * 3
    depths = [a[1] for a in attempts]
    assert depths[0] <= depths[1] == depths[2], attempts
    reached = depths[2]
    assert reached >= 2, attempts
    if kind == "pure" and size == "default":
        limit = sys.getrecursionlimit()
        assert limit - 10 <= reached <= limit, (reached, limit)
    # The thread's own stack kept its recursion counters across the switches.
    assert result["main_depth_after"] == result["main_depth_before"]


def test_python_recursion_of_900_works_on_default_stack(default_stack_size, recursion_depth):
    # Mostly about 3.11, where the C budget caps Python depth too: the
    # default stack must allow the default recursion limit.
    assert sys.getrecursionlimit() >= 1000

    def recurse(n):
        return 0 if n == 0 else recurse(n - 1) + 1

    def body():
        return recurse(900), goloop.park("half"), recurse(900)

    g = goloop.Goroutine(body)
    assert g.stack_size == default_stack_size
    assert g.resume() == "half"
    assert g.resume("x") == (900, "x", 900)
    # And the limit is honest: RecursionError comes at the limit, not before.
    limit = sys.getrecursionlimit()
    reached = goloop.Goroutine(recursion_depth).resume()
    assert limit - 10 <= reached <= limit, (reached, limit)


def test_recursion_limit_change_is_seen_by_goroutines(recursion_depth):
    old = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(300)
        reached = goloop.Goroutine(recursion_depth).resume()
        assert 290 <= reached <= 300, reached
    finally:
        sys.setrecursionlimit(old)


def test_goroutine_started_from_deep_recursion_has_its_own_budget():
    limit = sys.getrecursionlimit()
    here = len(__import__("traceback").extract_stack())

    def deep(n):
        if n == 0:
            # The parent is now close to the limit; the goroutine is not.
            inner = goloop.Goroutine(lambda: recurse(600)).resume()
            # Back on the parent, which must still hit its limit where it was.
            try:
                deep_more(0)
            except RecursionError:
                return inner
            raise AssertionError("parent lost its recursion limit")
        return deep(n - 1)

    def deep_more(k):
        return deep_more(k + 1)

    def recurse(n):
        return 0 if n == 0 else recurse(n - 1) + 1

    assert deep(limit - here - 60) == 600


def _bytes_per_level(kind, d1=20, d2=120):
    marks = {}

    def mark(n):
        if n in (d1, d2):
            marks[n] = _stack_depth()

    if kind == "pure":
        def pure(n):
            mark(n)
            return pure(n + 1) if n < d2 else 0
        run = lambda: pure(0)
    elif kind == "repr":
        class R:
            def __init__(self, n):
                self.n = n

            def __repr__(self):
                mark(self.n)
                return repr(R(self.n + 1)) if self.n < d2 else "R"
        run = lambda: repr(R(0))
    elif kind == "sorted":
        def key(n):
            mark(n)
            if n < d2:
                sorted([n + 1], key=key)
            return 0
        run = lambda: key(0)
    else:
        def mapped(n):
            mark(n)
            if n < d2:
                list(map(mapped, [n + 1]))
            return 0
        run = lambda: mapped(0)
    goloop.Goroutine(run).resume()
    return (marks[d2] - marks[d1]) / (d2 - d1)


def test_measured_stack_bytes_per_level():
    """Informational (run with -s): C stack per recursion level, measured with
    _stack_depth(); checks the glue's 6 KiB-per-C-level assumption holds."""
    assert _stack_depth() == 0          # not on a goroutine
    assert goloop.Goroutine(_stack_depth).resume() > 0
    measured = {kind: _bytes_per_level(kind) for kind in KINDS}
    print(f"\nPython {sys.version_info[0]}.{sys.version_info[1]}: C stack bytes per "
          f"recursion level on a goroutine: "
          + ", ".join(f"{k}={v:.0f}" for k, v in measured.items())
          + f" (glue budgets {GLUE_BYTES_PER_C_LEVEL} per C level)")
    assert measured["pure"] < 64, measured        # no C recursion since 3.11
    for kind in ("repr", "sorted", "map"):
        assert 100 < measured[kind] <= GLUE_BYTES_PER_C_LEVEL, measured


GUARD_SCRIPT = r"""
import goloop
from goloop._goloop import _recurse_in_c
def deep_c():
    # What a C extension recursing without CPython's checks does: ~1 MiB.
    return _recurse_in_c(1000)
g = goloop.Goroutine(deep_c, stack_size=SMALL)
g.resume()
print("no overflow")
"""


def test_guard_page_hit_is_a_clear_fatal_error(run_python):
    proc = run_python(GUARD_SCRIPT.replace("SMALL", str(SMALL)))
    assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr
    assert "goloop: fatal error: goroutine" in err, err
    assert f"(deep_c) overflowed its stack of {SMALL} bytes" in err, err
    assert "GOLOOP_STACK_SIZE" in err and "set_default_stack_size" in err, err
    # The same code is fine with room to run.
    proc = run_python(GUARD_SCRIPT.replace("stack_size=SMALL", "stack_size=4 << 20"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no overflow"


PARSER_SCRIPT = r"""
import goloop
def deep_parser():
    compile("-" * 20000 + "1", "<deep>", "eval")
g = goloop.Goroutine(deep_parser, stack_size=SMALL)
try:
    g.resume()
except (MemoryError, RecursionError) as e:
    print(type(e).__name__)
"""


def test_deeply_nested_source_on_a_small_stack(run_python):
    """From 3.14 CPython checks the C stack by address, against limits goloop
    sets for each goroutine's stack, and its parser stops with MemoryError.
    Before, the parser limits its recursion by a count of its own that knows
    nothing of a 64 KiB stack: there nested unary minus runs into the guard
    page, and goloop's fatal message says what happened."""
    proc = run_python(PARSER_SCRIPT.replace("SMALL", str(SMALL)))
    if sys.version_info >= (3, 14):
        assert proc.returncode == 0, (proc.returncode, proc.stderr)
        assert proc.stdout.strip() in ("MemoryError", "RecursionError"), proc.stdout
    else:
        assert proc.returncode == -signal.SIGSEGV, (proc.returncode, proc.stdout, proc.stderr)
        assert f"(deep_parser) overflowed its stack of {SMALL} bytes" in proc.stderr, proc.stderr
