"""Helpers of the preemption tests (tests/preempt): run a coroutine on a
preempting goloop loop or on a stock asyncio loop, count the preemptions
the run made, and say "no preemption happened" in a way the stock-loop
variants can expect (NotPreempted)."""
import asyncio
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
