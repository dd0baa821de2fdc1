"""Generated programs over asyncio's primitives give the same results on a
preempting goloop loop as on stock asyncio, and keep every invariant.

test_sync_stress.py stresses each primitive alone with hand-written tasks;
this file lets hypothesis write the programs: 2 to 6 tasks mixing Lock,
Semaphore/BoundedSemaphore, Queue, Event, Condition, TaskGroup (failing
ones too), asyncio.timeout (expired, timer-driven, never firing),
cancellation and shield(), with CPU bursts everywhere, inside critical
sections and shielded bodies included.  schedule_programs.py holds the
model, the strategy and the interpreter, and explains why every program
terminates, why its result cannot depend on the schedule, and which
invariants are checked while it runs.

Each example runs its program twice: on stock asyncio (the reference), then
on goloop with preemption on and a time slice hypothesis draws between
50 µs and 10 ms (at least half the draws at most 200 µs).  Both runs must
keep every invariant, and their results must be equal: a difference is a
goloop bug, or a program whose result depends on the schedule (a bug of
the model).

The proof that preemption happened where it matters, in every example with
a slice of at most 200 µs: the goloop run was preempted inside a critical
section at least once (a burst in a section saw goloop's preemption counter
move: nothing else runs while the step does, so the counter moves only if
the step was parked).  Every program has one long critical section (a Lock
or Semaphore section burning 1.5-3 ms, and on goloop on until it is
preempted, 0.2 s at most: a loaded machine can keep sysmon off the CPU for
milliseconds).  test_checks_catch_a_lock_that_preemption_breaks shows that
the checks fail when a primitive is broken in a way only preemption exposes.

What the fuzzing found is kept at the end of the file as two minimal
reproducers (of a bug on CPython < 3.13, fixed in goloop/preempt.c).

Reproducible in CI: hypothesis is derandomized (the examples are a function
of the test's code) and keeps no example database (no .hypothesis
directory).  The 300 examples take 15-30 s on a busy 2-core machine.  By
hand:

    GOLOOP_FUZZ_EXAMPLES=5000 python -m pytest tests/preempt/test_fuzzed_schedules.py
    GOLOOP_FUZZ_SEED=12345 ...      # other examples: random ones from that seed

A failure prints the shrunk program as Python (the dataclasses of
schedule_programs.py) and the time slice: run_program(GOLOOP, program,
time_slice=...) replays it (a timing-dependent failure may need a few runs,
and hypothesis may call it flaky).
"""
import asyncio
import os
import tempfile

import pytest
from hypothesis import configuration, given, seed, settings
from hypothesis import strategies as st

from preempt_helpers import (GOLOOP, STOCK, expect_preempted, expect_preemptions, perf, preemptions,
                             run_counting)
from schedule_programs import (Boom, Burn, LockSection, Program, ProgramRun, Yield,
                               programs)

EXAMPLES = int(os.environ.get("GOLOOP_FUZZ_EXAMPLES", "300"))
SEED = os.environ.get("GOLOOP_FUZZ_SEED")
SMALL_SLICE_US = 200       # at most this: preemption inside a section is required

# Whatever the database setting, hypothesis caches the constants it finds in
# the tests' source in its home directory, ./.hypothesis by default: keep
# that out of the checkout (HYPOTHESIS_STORAGE_DIRECTORY still chooses).
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    configuration.set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "goloop-hypothesis"))

# Log-ish: half the slices are small enough to preempt most sections.  Small
# values first, so that a failure shrinks towards 50 µs.
time_slices_us = st.one_of(st.integers(50, SMALL_SLICE_US), st.integers(50, 10_000))


def run_program(kind, program, time_slice=None, lock_type=asyncio.Lock):
    """Run `program` on a new loop of `kind` (goloop with preemption on and
    `time_slice`, or stock asyncio); the finished ProgramRun, with its
    result and the preemptions the loop made."""
    run = ProgramRun(program, lock_type=lock_type,
                     count_preemptions=preemptions if kind == GOLOOP else None)
    options = {"time_slice": time_slice} if kind == GOLOOP else {}
    run.result, run.preemptions = run_counting(kind, run.main, **options)
    return run


def fuzz_settings(test):
    test = settings(
        max_examples=EXAMPLES,
        deadline=None,              # an example's duration is its CPU bursts, and load varies
        derandomize=SEED is None,
        database=None,
        print_blob=False,
    )(test)
    return seed(int(SEED))(test) if SEED is not None else test


@fuzz_settings
@given(program=programs(), slice_us=time_slices_us)
def test_generated_program_runs_alike_on_goloop_and_asyncio(program, slice_us):
    reference = run_program(STOCK, program)
    assert not reference.violations, "\n".join(reference.violations)
    preempted = run_program(GOLOOP, program, time_slice=slice_us / 1e6)
    assert not preempted.violations, "\n".join(preempted.violations)
    assert preempted.result == reference.result
    if slice_us <= SMALL_SLICE_US:
        expect_preempted(
            preempted.preempted_in_sections,
            f"no burst inside a critical section was preempted at a {slice_us} µs slice "
            f"({preempted.preemptions} preemptions in the run; the long section's wait "
            f"for one (preempted, wall s, CPU s): {preempted.waits_for_preemption})",
        )


# -- The checks can fail ----------------------------------------------------------


class LockThatDoesNotExclude:
    """An asyncio.Lock look-alike that lets every task in at once.

    On a cooperative loop it goes unnoticed by any section without an await
    (one step runs the section from end to end); only preemption lets a
    second task into such a section."""

    def __init__(self):
        self.holders = 0

    async def acquire(self):
        self.holders += 1
        return True

    def release(self):
        self.holders -= 1

    def locked(self):
        return self.holders > 0

    async def __aenter__(self):
        await self.acquire()

    async def __aexit__(self, *exc_info):
        self.release()


# Three tasks, each one Lock section burning 3 ms (on goloop, on until
# preempted), no await inside; and a bystander burning outside the Lock, so
# that a preempted section always has another task's burst run in its middle.
ONLY_PREEMPTION_SHOWS = Program(
    tasks=((LockSection((Burn(3000, until_preempted=True),)),),) * 3
    + ((Burn(1000), Yield(), Burn(1000)),),
    endings=(None,) * 4,
    slots=1,
    bounded=False,
    maxsize=0,
    consumer_burns=(0,),
    cond_shares_lock=False,
)


@pytest.mark.parametrize("slice_us", [50, 200])
def test_checks_catch_a_lock_that_preemption_breaks(slice_us):
    # The broken Lock passes on stock asyncio: without preemption, nothing
    # can tell it from a real one here.
    assert not run_program(STOCK, ONLY_PREEMPTION_SHOWS, lock_type=LockThatDoesNotExclude).violations
    # The real Lock passes on goloop, preempted inside its sections...
    sound = run_program(GOLOOP, ONLY_PREEMPTION_SHOWS, time_slice=slice_us / 1e6)
    assert not sound.violations, "\n".join(sound.violations)
    expect_preempted(sound.interleaved_in_sections, "no section had another task run in its middle")
    # ...and the broken one is caught: two tasks inside, and lost updates.
    broken = run_program(GOLOOP, ONLY_PREEMPTION_SHOWS, time_slice=slice_us / 1e6,
                         lock_type=LockThatDoesNotExclude)
    assert any("tasks inside the Lock at once" in v for v in broken.violations), broken.violations
    assert any("lost updates" in v for v in broken.violations), broken.violations


# -- What the fuzzing found -------------------------------------------------------
#
# The minimal forms of the programs hypothesis shrank a failure to: a
# TaskGroup's child fails, or a timeout expires, while the task owning the
# block is preempted inside it, and the block then ends without an await.
# The block cancels a RUNNING task, and on CPython < 3.13 its exit's
# uncancel() used to leave that cancellation pending: the task got a
# CancelledError at its next await, after the block.  On stock asyncio
# neither can cancel a running task there.  goloop now takes such a cancel()
# back while the step is parked and gives it back when the step yields
# (csrc/cpython/preempt.c), unless it was uncancelled meanwhile.


class StrayCancellation(Exception):
    """A task got a CancelledError nobody asked for."""


SPIN_LIMIT = 5.0


def spin_until(predicate):
    """Burn until predicate() is true, which only another task or callback
    can make it: NotPreempted if it is not within SPIN_LIMIT seconds."""
    end = perf() + SPIN_LIMIT
    while not predicate():
        expect_preempted(perf() < end, f"nothing else ran for {SPIN_LIMIT} s")


async def expect_no_stray_cancellation():
    """StrayCancellation if this task's next await raises CancelledError."""
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError:
        raise StrayCancellation("CancelledError at the first await after the block") from None


def test_taskgroup_failing_while_its_owner_is_preempted_leaves_no_cancellation():
    async def main():
        owner = asyncio.current_task()

        async def fail():
            raise Boom()

        errors = ()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(fail())
                # Preempted here: fail() runs and fails, and the group cancels
                # the owner, which is running.
                spin_until(owner.cancelling)
        except* Boom as raised:
            errors = raised.exceptions
        assert len(errors) == 1
        await expect_no_stray_cancellation()

    run_counting(GOLOOP, main, time_slice=SMALL_SLICE_US / 1e6)


def test_timeout_expiring_while_its_owner_is_preempted_leaves_no_cancellation():
    async def main():
        owner = asyncio.current_task()
        async with asyncio.timeout(0.001):
            # Preempted here: the timeout fires and cancels the owner, which
            # is running; the body ends without an await, so no TimeoutError.
            spin_until(owner.cancelling)
        await expect_no_stray_cancellation()

    run_counting(GOLOOP, main, time_slice=SMALL_SLICE_US / 1e6)


@pytest.mark.parametrize("next_await", ["sleep", "yield"])
def test_a_cancel_arriving_while_preempted_is_delivered_at_the_next_await(next_await):
    """The other side of the fix above: a cancel() that reaches a preempted
    task and is not taken back must still land, at the task's next await
    (the future it waits for cancelled, or, after a bare yield, its next
    step), with its message, and count in cancelling()."""
    async def main():
        owner = asyncio.current_task()
        asyncio.get_running_loop().call_soon(owner.cancel, "stop")
        spin_until(owner.cancelling)        # preempted: the cancel() lands here
        try:
            if next_await == "sleep":
                await asyncio.sleep(5)
            else:
                await asyncio.sleep(0)
                await asyncio.sleep(5)
        except asyncio.CancelledError as cancelled:
            return "cancelled", cancelled.args, owner.cancelling()
        return "not cancelled", (), owner.cancelling()

    result, preemptions = run_counting(GOLOOP, main, time_slice=SMALL_SLICE_US / 1e6)
    assert result == ("cancelled", ("stop",), 1)
    expect_preemptions(preemptions, 1)
