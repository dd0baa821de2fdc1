"""asyncio's synchronisation primitives keep their promises under preemption.

Preemption lets another task run in the middle of what asyncio code
assumes is atomic between two awaits, but only in the task's own code:
never while asyncio's (or goloop's) frames are on top.  So a task
preempted while it holds a Lock, a Semaphore slot or a Queue item must
leave the primitive's state exactly as a cooperative loop would.

Each test runs 1,000 tasks on a loop with a 0.2 ms time slice.  Each task
does ~1 ms of pure-Python CPU work (five slices) INSIDE its critical
section, and a bystander task burns the CPU in short chunks all along, so
that a preempted section always has someone else to run meanwhile.  The
tests then check, with zero violations allowed:

- Lock: never two tasks inside;
- Semaphore(5) / BoundedSemaphore(5): never more than 5 inside, no
  over-release (ValueError), all 5 slots free at the end;
- Queue: with 500 producers and 500 consumers on a bounded queue, every
  item is consumed exactly once;
- Event: no waiter is released before set(), every waiter after it;
- Condition: wait_for() returns with its predicate true (the predicate
  itself burns CPU, so it is preempted at times), and notify(n) wakes n
  waiters, no more;
- TaskGroup: every child completes; a child's error cancels every sibling,
  each at its next await and not in the middle of its work;
- asyncio.timeout: a body that hogs the CPU past its deadline sees the
  cancellation requested (not before the deadline) while it still runs, and
  is cancelled at its next await, not earlier.

The proof that preemption really hit inside the critical sections: the
sections record whether another task ran in their middle (a burn finds
another task's mark when it looks again), and at least 20 of the ~1,000
must have, and goloop.stats()['preemptions'] must have grown by at least
50 (thousands is typical).  On stock asyncio no section is ever entered by
two tasks at once and nothing runs in their middle: each test runs on the
stock loop too, as a strict xfail expecting exactly that NotPreempted
failure (see conftest.py), after the invariants have held there.

Margins: the invariants allow no violation at all, so they cannot flake;
the evidence thresholds are 20 to 50 times below what a preempting loop
shows.  A stall of the machine only delays a test; every wait is bounded
(60 s for a whole stress, 1 s of no other task running for a spinning
timeout body, 10 s for a polled condition).
"""
import asyncio
import collections
import contextlib

import pytest

from preempt_helpers import expect_preempted, expect_preemptions, perf, run_counting

N = 1000                   # tasks per stress
SLICE = 0.0002             # the loop's time slice
INSIDE = 0.001             # CPU work inside a critical section: five slices
BYSTANDER_CHUNK = 0.0003   # the bystander's work between two awaits
MIN_INTERLEAVED = 20       # sections that must have been preempted with another task running
MIN_PREEMPTIONS = 50
STRESS_LIMIT = 60.0        # a deadlocked stress fails instead of hanging
QUIET_LIMIT = 1.0          # a spinning task that sees no other task run for this long gives up
WAIT_LIMIT = 10.0          # polled conditions
POLL = 0.001


class Trace:
    """Which task burnt the CPU last, shared by the tasks of one stress.

    A burn marks the trace as its own and checks the mark as it goes; when
    it finds another burn's mark, it was preempted in its middle and
    another task ran meanwhile."""

    def __init__(self):
        self.owner = None
        self.gave_up = False

    def burn(self, seconds):
        """Pure-Python CPU work for `seconds` of wall time, no await; True if
        another task burnt in its middle."""
        me = object()
        self.owner = me
        interrupted = False
        end = perf() + seconds
        while perf() < end:
            if self.owner is not me:
                interrupted = True
                self.owner = me
        return interrupted

    def spin_until(self, predicate):
        """Burn until predicate() is true and return True.  Return False
        once QUIET_LIMIT seconds pass with no other task running (this loop
        does not preempt, so nothing can make predicate() true meanwhile);
        every later call then returns False at once, so that on a stock
        loop the stress pays that second only once."""
        me = object()
        self.owner = me
        quiet_since = perf()
        while not predicate():
            now = perf()
            if self.owner is not me:
                self.owner = me
                quiet_since = now
            elif self.gave_up or now - quiet_since > QUIET_LIMIT:
                self.gave_up = True
                return False
        return True


class Section:
    """Watches a critical section: the tasks inside it (a set, whose add
    and discard are single C calls that preemption cannot split), how many
    were inside as each entered, and which were preempted inside while
    another task ran."""

    def __init__(self, trace):
        self.trace = trace
        self.inside = set()
        self.occupancy = []
        self.interleaved = 0

    def work(self, seconds=INSIDE):
        me = object()
        self.inside.add(me)
        self.occupancy.append(len(self.inside))
        try:
            if self.trace.burn(seconds):
                self.interleaved += 1   # only ever read at the end: a lost count errs low
        finally:
            self.inside.discard(me)

    @property
    def entries(self):
        return len(self.occupancy)

    @property
    def peak(self):
        return max(self.occupancy)


def expect_preempted_inside(section, preempted):
    """The evidence that preemption hit inside `section`."""
    expect_preempted(
        section.interleaved >= MIN_INTERLEAVED,
        f"another task ran in the middle of only {section.interleaved} of "
        f"{section.entries} critical sections",
    )
    expect_preemptions(preempted, MIN_PREEMPTIONS)


@contextlib.asynccontextmanager
async def bystander(trace):
    """While the body runs, a task burns the CPU in short chunks between
    awaits, so that a preempted section is never the only task ready."""
    stop = asyncio.Event()

    async def burn_between_awaits():
        while not stop.is_set():
            trace.burn(BYSTANDER_CHUNK)
            await asyncio.sleep(0)

    task = asyncio.create_task(burn_between_awaits())
    try:
        yield
    finally:
        stop.set()
        await task


@pytest.fixture
def stress(loop_kind):
    """stress(body): run `await body(trace)` next to a bystander on a loop
    of loop_kind with a SLICE time slice; (its result, preemptions made)."""

    def run(body):
        async def main():
            trace = Trace()
            async with asyncio.timeout(STRESS_LIMIT), bystander(trace):
                return await body(trace)

        return run_counting(loop_kind, main, time_slice=SLICE)

    return run


async def run_all(worker, n=N):
    """worker(0) ... worker(n-1), each a task; their results."""
    return await asyncio.gather(*(worker(i) for i in range(n)))


async def wait_until(predicate):
    """Poll predicate() until it is true; AssertionError after WAIT_LIMIT."""
    deadline = perf() + WAIT_LIMIT
    while not predicate():
        assert perf() < deadline, "condition not reached in time"
        await asyncio.sleep(POLL)


# -- Lock, Semaphore, BoundedSemaphore ----------------------------------------


def test_lock_admits_one_task_at_a_time(stress):
    async def body(trace):
        lock = asyncio.Lock()
        section = Section(trace)

        async def worker(i):
            async with lock:
                section.work()

        await run_all(worker)
        return section, lock.locked()

    (section, locked), preempted = stress(body)
    assert section.entries == N
    assert section.peak == 1, f"{section.peak} tasks inside a Lock at once"
    assert not locked
    expect_preempted_inside(section, preempted)


SLOTS = 5


async def free_slots(semaphore):
    """How many acquire() succeed at once; released again afterwards."""
    taken = 0
    while not semaphore.locked():
        await semaphore.acquire()
        taken += 1
    for _ in range(taken):
        semaphore.release()
    return taken


@pytest.mark.parametrize("semaphore_type", [asyncio.Semaphore, asyncio.BoundedSemaphore])
def test_semaphore_admits_at_most_n_tasks(stress, semaphore_type):
    async def body(trace):
        semaphore = semaphore_type(SLOTS)
        section = Section(trace)

        async def worker(i):
            if i % 2:
                async with semaphore:
                    section.work()
            else:
                await semaphore.acquire()
                try:
                    section.work()
                finally:
                    semaphore.release()   # a BoundedSemaphore over-released raises ValueError

        await run_all(worker)
        return section, semaphore, await free_slots(semaphore)

    (section, semaphore, free), preempted = stress(body)
    assert section.entries == N
    assert section.peak <= SLOTS, f"{section.peak} tasks inside a Semaphore({SLOTS}) at once"
    assert free == SLOTS
    if semaphore_type is asyncio.BoundedSemaphore:
        with pytest.raises(ValueError):
            semaphore.release()
    expect_preempted(section.peak >= 2, f"at most {section.peak} task inside the semaphore at once")
    expect_preempted_inside(section, preempted)


# -- Queue, Event, Condition ---------------------------------------------------


QUEUE_SIZE = 10
ITEMS_PER_PRODUCER = 2


def test_queue_delivers_every_item_exactly_once(stress):
    producers = consumers = N // 2
    expected = sorted((p, k) for p in range(producers) for k in range(ITEMS_PER_PRODUCER))

    async def body(trace):
        queue = asyncio.Queue(QUEUE_SIZE)
        section = Section(trace)
        consumed = []

        async def produce(p):
            for k in range(ITEMS_PER_PRODUCER):
                await queue.put((p, k))

        async def consume():
            while True:
                item = await queue.get()
                try:
                    section.work()
                    consumed.append(item)
                finally:
                    queue.task_done()

        consuming = [asyncio.create_task(consume()) for _ in range(consumers)]
        await run_all(produce, producers)
        await queue.join()
        for task in consuming:
            task.cancel()
        await asyncio.gather(*consuming, return_exceptions=True)
        return section, consumed, queue.empty()

    (section, consumed, empty), preempted = stress(body)
    assert sorted(consumed) == expected, "items lost or consumed twice"
    assert empty
    expect_preempted_inside(section, preempted)


def test_event_releases_waiters_after_set_and_none_before(stress):
    async def body(trace):
        event = asyncio.Event()
        section = Section(trace)
        waiting, released = [], []
        is_set = False

        async def waiter(i):
            waiting.append(i)
            await event.wait()
            released.append(is_set)
            section.work()

        waiters = [asyncio.create_task(waiter(i)) for i in range(N - 1)]
        await wait_until(lambda: len(waiting) == len(waiters))
        trace.burn(INSIDE)              # the setter is preempted too
        released_before = len(released)
        is_set = True
        event.set()
        await asyncio.gather(*waiters)
        return section, released_before, released

    (section, released_before, released), preempted = stress(body)
    assert released_before == 0, f"{released_before} waiters released before set()"
    assert len(released) == N - 1 and all(released)
    expect_preempted_inside(section, preempted)


PREDICATE_WORK = SLICE


def test_condition_wait_for_returns_with_its_predicate_true(stress):
    pairs = N // 2

    async def body(trace):
        condition = asyncio.Condition()
        section = Section(trace)
        items, taken, stale = [], [], []

        def ready():                    # called by asyncio's wait_for, burns a slice
            trace.burn(PREDICATE_WORK)
            return bool(items)

        async def consumer(i):
            async with condition:
                await condition.wait_for(ready)
                section.work()
                if items:
                    taken.append(items.pop())
                else:
                    stale.append(i)

        async def producer(i):
            async with condition:
                section.work()
                items.append(i)
                condition.notify()

        await asyncio.gather(*(consumer(i) for i in range(pairs)), *(producer(i) for i in range(pairs)))
        return section, taken, stale, items

    (section, taken, stale, items), preempted = stress(body)
    assert not stale, f"{len(stale)} consumers woke with the predicate false"
    assert sorted(taken) == list(range(pairs)) and not items
    assert section.peak == 1, "two tasks inside a Condition's lock at once"
    expect_preempted_inside(section, preempted)


HELD_BACK = 10          # waiters no notify(n) reaches, until notify_all()
NOTIFIED_WORK = 0.0005
SETTLE = 0.05           # time for a wrongly woken waiter to show up


def notify_sizes(total):
    """1, 2, 3, ... summing to exactly `total`."""
    n = 1
    while total > 0:
        yield min(n, total)
        total -= min(n, total)
        n += 1


def test_condition_notify_n_wakes_n_waiters(stress):
    async def body(trace):
        condition = asyncio.Condition()
        section = Section(trace)
        waiting, woke, early = [], [], []

        async def waiter(i):
            async with condition:
                waiting.append(i)
                await condition.wait()
                woke.append(i)
                section.work(NOTIFIED_WORK)

        waiters = [asyncio.create_task(waiter(i)) for i in range(N)]
        await wait_until(lambda: len(waiting) == N)
        notified = 0
        for n in notify_sizes(N - HELD_BACK):
            async with condition:
                if len(woke) != notified:
                    early.append((notified, len(woke)))
                condition.notify(n)
            notified += n
            await wait_until(lambda: len(woke) >= notified)
        await asyncio.sleep(SETTLE)
        woken_by_notify = len(woke)
        async with condition:
            condition.notify_all()
        await asyncio.gather(*waiters)
        return section, notified, woken_by_notify, early, len(woke)

    (section, notified, woken_by_notify, early, woken), preempted = stress(body)
    assert not early, f"waiters woke without a notify (notified, woken): {early}"
    assert woken_by_notify == notified == N - HELD_BACK
    assert woken == N
    expect_preempted_inside(section, preempted)


# -- TaskGroup, timeout ----------------------------------------------------------


def test_taskgroup_children_all_complete(stress):
    async def body(trace):
        section = Section(trace)

        async def child(i):
            await asyncio.sleep(0)
            section.work()
            return i

        async with asyncio.TaskGroup() as group:
            children = [group.create_task(child(i)) for i in range(N)]
        return section, [c.result() for c in children]

    (section, results), preempted = stress(body)
    assert results == list(range(N))
    assert section.entries == N
    expect_preempted_inside(section, preempted)


class Boom(Exception):
    pass


SIBLING_WORK = 0.0003
FAIL_AFTER = 0.02
MIN_CANCELLED_MID_STEP = 10


def test_taskgroup_error_cancels_siblings_at_their_next_await(stress):
    async def body(trace):
        phases, requested_mid_step = [], []

        async def sibling(i):
            task = asyncio.current_task()
            phase = "started"
            try:
                while True:
                    phase = "working"
                    trace.burn(SIBLING_WORK)
                    if task.cancelling():       # asked while this step was running
                        requested_mid_step.append(i)
                    phase = "awaiting"
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                phases.append(phase)
                raise

        async def failing():
            await asyncio.sleep(FAIL_AFTER)
            trace.burn(INSIDE)
            raise Boom()

        errors = ()
        try:
            async with asyncio.TaskGroup() as group:
                siblings = [group.create_task(sibling(i)) for i in range(N - 1)]
                group.create_task(failing())
        except* Boom as raised:
            errors = raised.exceptions
        return errors, siblings, phases, requested_mid_step

    (errors, siblings, phases, requested_mid_step), preempted = stress(body)
    assert len(errors) == 1
    assert all(s.cancelled() for s in siblings)
    assert phases == ["awaiting"] * (N - 1), "a sibling was cancelled in the middle of its work"
    expect_preempted(
        len(requested_mid_step) >= MIN_CANCELLED_MID_STEP,
        f"only {len(requested_mid_step)} siblings were asked to cancel while preempted",
    )
    expect_preemptions(preempted, MIN_PREEMPTIONS)


FIRST_DEADLINE = 0.02
DEADLINE_STEP = 0.0002      # deadlines spread over 0.2 s
AFTER_REQUEST = 0.0005      # work a body does after it saw the cancellation requested
EARLY_TOLERANCE = 0.001

TimeoutOutcome = collections.namedtuple(
    "TimeoutOutcome", "deadline seen_at timed_out ended_at reached_await"
)


def test_timeout_cancels_a_hogging_body_at_its_next_await(stress):
    async def body(trace):
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def hogging_body(i):
            task = asyncio.current_task()
            deadline = start + FIRST_DEADLINE + i * DEADLINE_STEP
            seen_at = None
            reached_await = timed_out = False
            try:
                async with asyncio.timeout_at(deadline):
                    if trace.spin_until(task.cancelling):
                        seen_at = loop.time()
                    trace.burn(AFTER_REQUEST)   # still running: cancellation waits for the await
                    reached_await = True
                    await asyncio.sleep(0)
            except TimeoutError:
                timed_out = True
            return TimeoutOutcome(deadline, seen_at, timed_out, loop.time(), reached_await)

        return await run_all(hogging_body)

    outcomes, preempted = stress(body)
    for o in outcomes:
        assert o.reached_await, "cancelled in the middle of its work, not at its await"
        if o.timed_out:
            assert o.ended_at >= o.deadline - EARLY_TOLERANCE, "timed out before the deadline"
        if o.seen_at is not None:
            assert o.seen_at >= o.deadline - EARLY_TOLERANCE, "cancellation requested before the deadline"
            assert o.timed_out, "cancellation requested, yet the next await was not cancelled"
    seen = sum(o.seen_at is not None for o in outcomes)
    expect_preempted(seen == N, f"only {seen} of {N} hogging bodies saw their timeout fire while they ran")
    expect_preemptions(preempted, MIN_PREEMPTIONS)
