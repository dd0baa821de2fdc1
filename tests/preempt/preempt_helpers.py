"""Helpers of the preemption tests (tests/preempt): run a coroutine on a
preempting goloop loop or on a stock asyncio loop, count the preemptions
the run made, say "no preemption happened" in a way the stock-loop
variants can expect (NotPreempted), and run a probe script (probes/) in a
subprocess."""
import asyncio
import json
import os
import time

import goloop

GOLOOP = "goloop"
STOCK = "asyncio"

perf = time.perf_counter


class NotPreempted(AssertionError):
    """The run shows no sign of preemption where it must have happened.

    Only the checks that tell a preempting loop from a cooperative one raise
    this; a broken invariant (two tasks inside a Lock, a lost Queue item)
    raises a plain AssertionError.  The stock asyncio variants are expected
    to fail with exactly this, so that they prove the tests discriminate
    without hiding a bug in the test itself."""


def expect_preempted(condition, message):
    """Raise NotPreempted(message) unless condition holds."""
    if not condition:
        raise NotPreempted(message)


def make_loop(kind, **options):
    """A new loop: goloop's with preemption on and `options`
    (time_slice=...), or the stock selector loop (options do not apply)."""
    if kind == GOLOOP:
        return goloop.new_event_loop(preempt=True, **options)
    if kind == STOCK:
        return asyncio.SelectorEventLoop()
    raise ValueError(kind)


def preemptions():
    """Preemptions goloop made so far in this process."""
    return goloop.stats()["preemptions"]


def run_counting(kind, main, **options):
    """Run main() (a coroutine function) on a new loop of `kind` as
    asyncio.run() does; (its result, preemptions made meanwhile), the count
    None on a stock loop."""
    before = preemptions() if kind == GOLOOP else None
    with asyncio.Runner(loop_factory=lambda: make_loop(kind, **options)) as runner:
        result = runner.run(main())
    return result, (None if before is None else preemptions() - before)


def expect_preemptions(count, minimum):
    """On goloop (count is not None) at least `minimum` preemptions."""
    if count is not None:
        expect_preempted(count >= minimum, f"only {count} preemptions, expected at least {minimum}")


PROBES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "probes")


def run_probe(run_python, script, *args, timeout_s=30):
    """Run probes/<script> with args in a fresh interpreter (the run_python
    fixture), giving it PROBE_TIMEOUT=timeout_s before it dumps its stacks
    and exits; (CompletedProcess, the JSON of its last line, or None when
    it failed)."""
    code = (f"import runpy, sys; sys.path.insert(0, {PROBES!r}); "
            f"runpy.run_path({os.path.join(PROBES, script)!r}, run_name='__main__')")
    r = run_python(code, *map(str, args), env={"PROBE_TIMEOUT": str(timeout_s)}, timeout=timeout_s * 10)
    lines = r.stdout.strip().splitlines()
    return r, (json.loads(lines[-1]) if r.returncode == 0 and lines else None)
