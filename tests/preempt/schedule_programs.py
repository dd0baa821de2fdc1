"""Generated programs over asyncio's primitives, for test_fuzzed_schedules.py:
the model, a hypothesis strategy that draws programs, and the interpreter
that runs one on the running loop and checks its invariants as it goes.

The model
---------
A Program is 2 to 6 tasks, each a list of operations over one shared set of
primitives: a Lock, a Semaphore(n) or BoundedSemaphore(n), a Queue(maxsize),
Events, a Condition (on its own lock or on the program's Lock) guarding a
counter, plus TaskGroups, asyncio.timeout(), cancellation and shield().
Operations are frozen dataclasses, so that hypothesis prints a failing
program as readable, copy-pasteable Python.  CPU bursts (Burn: pure-Python
work for a number of microseconds, no await) occur everywhere, inside
critical sections and shielded bodies too, so that a preempting loop parks
steps while they hold a Lock or a Semaphore slot.

Every program terminates, by construction:

- nothing waits while it holds the Lock or a Semaphore slot, except for a
  queue put, a sleep(0), a shielded body or a timeout it owns, all of which
  end without anything from the waiting tasks; the Lock is always taken
  before a Semaphore slot, never the other way round; the Condition's lock
  (which may be the Lock) is taken only by a task holding nothing else;
- a task waits (Event.wait, Condition.wait_for, waiting to cancel a task)
  only for what tasks of a HIGHER index do unconditionally, so task n-1
  never waits for another task, task n-2 waits at most for n-1, and so on;
- the Queue is drained by consumer tasks that take exactly as many items
  as the program puts, and wait for nothing else: a put waits only while
  the queue is full, which a consumer is then emptying;
- a task is cancelled only once it is parked for good (awaiting an Event
  nobody sets), by the one lower task that names it, so where the
  cancellation lands does not depend on the schedule; a failing TaskGroup
  child raises only once all its siblings are parked likewise.

Every program's result is the same on any correct asyncio loop, whatever
the interleaving: the interpreter records only schedule-independent facts
(each operation's outcome, in per-coroutine logs; how each task ended; the
counters the Lock and the Condition guard; the multiset of items the
consumers received).  What depends on the schedule (who got the Lock
first, which consumer got which item) is checked as an invariant instead:

- never two tasks inside the Lock (or the Condition's lock), never more
  than n inside the Semaphore; the counters they guard lose no update
  (a read and its write straddle a CPU burst); all slots free at the end
  (and a BoundedSemaphore refuses one release more);
- every queued item is received exactly once, and each consumer receives
  each producer's items in the order they were put (the Queue is FIFO);
- Event.wait() returns only after set(); Condition.wait_for() returns with
  its predicate true and the lock held;
- a TaskGroup's children are all done when it exits; a failing child
  cancels its siblings, which end cancelled, and the group raises exactly
  its one error;
- an expired asyncio.timeout() cancels the block at its first await, not
  before (the code before the await ran to its end) and raises
  TimeoutError out of the block; a timer-driven one does so for a body
  waiting for good;
- shield() protects its inner task: the outer task is cancelled, the inner
  one completes;
- each task ends as planned: cancelled if it is a victim, done otherwise;
  when the program ends, no task is pending.

A broken invariant is recorded as a violation (a string), not raised, so
that the program still runs to its end and every violation is reported.

This module does not import goloop: it runs on any loop, and counts
preemptions through a function it is given.
"""
import asyncio
import collections
import dataclasses
import time
import traceback

from hypothesis import strategies as st

perf = time.perf_counter

MAX_TASKS = 6
PROGRAM_LIMIT = 5.0         # seconds (a program takes milliseconds): a deadlock fails the example
LONG_SECTION_US = (1500, 3000)   # the one long critical section every program has
# sysmon is a thread: on a loaded machine it can wait milliseconds for a CPU
# (seen: 2.5% of 5 ms bursts not preempted at a 50-200 µs slice with 6
# runnable threads on 2 cores), so a burst that must be preempted waits for
# it rather than trusting a fixed length.  The limit is CPU time of the
# burst's thread: a stall of the whole process (seen once: a 0.2 s wall-time
# wait ended without a preemption) does not use it up.
PREEMPTION_WAIT_LIMIT = 0.2


# -- The program model --------------------------------------------------------------


def _frozen(cls):
    """A frozen dataclass: hashable, comparable, and printed as Python."""
    return dataclasses.dataclass(frozen=True)(cls)


@_frozen
class Burn:
    """Pure-Python CPU work for `us` microseconds, no await; on a preempting
    loop, with until_preempted, on until the step is preempted (at most
    PREEMPTION_WAIT_LIMIT seconds of the thread's CPU time)."""
    us: int
    until_preempted: bool = False


@_frozen
class Yield:
    """await asyncio.sleep(0)."""


@_frozen
class LockSection:
    """async with lock: body (local ops), updating the Lock's counter
    across it."""
    body: tuple


@_frozen
class SemSection:
    """async with semaphore: body (local ops, none taking the Lock)."""
    body: tuple


@_frozen
class Put:
    """Put `items` items on the Queue, one after the other."""
    items: int


@_frozen
class SetEvent:
    event: int


@_frozen
class WaitEvent:
    """Wait for an Event a higher task sets."""
    event: int


@_frozen
class Notify:
    """async with condition: add `by` to its counter (burning `us` between the
    read and the write), notify_all()."""
    by: int
    us: int


@_frozen
class WaitFor:
    """async with condition: wait_for(counter >= at_least); higher tasks add
    at least that much."""
    at_least: int


@_frozen
class Group:
    """A TaskGroup running each child op list as a task."""
    children: tuple


@_frozen
class FailingGroup:
    """A TaskGroup of siblings, each running its local ops and parking for good,
    and a child that raises once they are all parked.  With parent_waits the
    task owning the group waits in its body (for good: the group's abort
    cancels it there); without, it goes straight to the group's exit."""
    siblings: tuple
    parent_waits: bool


@_frozen
class ExpiredTimeout:
    """async with asyncio.timeout(0): burn `us`, await sleep(0) (cancelled
    there), then code that must never run."""
    us: int


@_frozen
class TimerTimeout:
    """async with asyncio.timeout(us µs): wait for an Event nobody sets."""
    us: int


@_frozen
class GenerousTimeout:
    """async with asyncio.timeout(PROGRAM_LIMIT): body (ops); never fires."""
    body: tuple


@_frozen
class Shielded:
    """await asyncio.shield(body run as a task)."""
    body: tuple


@_frozen
class Cancel:
    """Wait until task `victim` is parked, cancel it, wait for it to end."""
    victim: int


@_frozen
class Park:
    """A victim's ending: wait for good, until its canceller cancels it."""


@_frozen
class ShieldPark:
    """A victim's ending: await shield(inner), where inner runs its local ops
    and then waits for the canceller to release it after the cancel."""
    inner: tuple


@_frozen
class Program:
    """What hypothesis draws: the tasks and the primitives' parameters."""
    tasks: tuple            # per task, its op list
    endings: tuple          # per task: None, Park() or ShieldPark(...)
    slots: int              # the Semaphore's
    bounded: bool           # BoundedSemaphore rather than Semaphore
    maxsize: int            # the Queue's (0: unbounded)
    consumer_burns: tuple   # per consumer task, µs of work after each get
    cond_shares_lock: bool  # Condition(lock) rather than Condition()


def walk(ops):
    """Every op of `ops`, nested ones included."""
    for op in ops:
        yield op
        for field in dataclasses.fields(op):
            value = getattr(op, field.name)
            if field.name in ("body", "inner"):
                yield from walk(value)
            elif field.name in ("children", "siblings"):
                for child in value:
                    yield from walk(child)


def all_ops(program):
    for ops, ending in zip(program.tasks, program.endings):
        yield from walk(ops)
        if ending is not None:
            yield ending
            if isinstance(ending, ShieldPark):
                yield from walk(ending.inner)


def items_put(program):
    return sum(op.items for op in all_ops(program) if isinstance(op, Put))


def consumer_counts(program):
    """How many items each consumer takes: the program's puts, split."""
    total, n = items_put(program), len(program.consumer_burns)
    return [total // n + (c < total % n) for c in range(n)]


# -- The strategy -------------------------------------------------------------------

# Half the bursts are short, half last up to 1.5 ms (30 of the smallest slices).
burns = st.one_of(st.integers(0, 100), st.integers(100, 1500))


class _Plan:
    """What generating the tasks from the highest index down knows: the
    Events and the Condition increments that the higher tasks provide (a
    task may wait only for those), and the next Event's number."""

    def __init__(self):
        self.next_event = 0
        self.higher_events = []
        self.higher_notified = 0
        self.own_events = []
        self.own_notified = 0

    def new_event(self):
        self.own_events.append(self.next_event)
        self.next_event += 1
        return self.own_events[-1]

    def task_done(self):
        self.higher_events += self.own_events
        self.higher_notified += self.own_notified
        self.own_events, self.own_notified = [], 0


LOCAL_KINDS = ("burn", "yield", "lock", "sem", "put", "set", "expired", "timer", "shield")
TOP_KINDS = LOCAL_KINDS + ("wait", "notify", "wait_for", "group", "failing", "generous")


def _draw_local_ops(draw, plan, may_lock, may_sem, depth, most=3):
    """Ops that wait for no other program task: what may run while holding
    the Lock or a slot (`may_lock`/`may_sem`: not already held), in a
    shielded body or before a park."""
    ops = []
    for _ in range(draw(st.integers(0, most))):
        kind = draw(st.sampled_from(LOCAL_KINDS))
        op = _draw_local_op(draw, plan, kind, may_lock, may_sem, depth)
        if op is not None:
            ops.append(op)
    return tuple(ops)


def _draw_local_op(draw, plan, kind, may_lock, may_sem, depth):
    nested = depth < 2
    if kind == "burn":
        return Burn(draw(burns))
    if kind == "yield":
        return Yield()
    if kind == "lock" and may_lock and nested:
        # Lock before Semaphore, always: a Semaphore body never takes the Lock.
        return LockSection(_draw_local_ops(draw, plan, False, may_sem, depth + 1))
    if kind == "sem" and may_sem and nested:
        return SemSection(_draw_local_ops(draw, plan, False, False, depth + 1))
    if kind == "put":
        return Put(draw(st.integers(1, 3)))
    if kind == "set":
        return SetEvent(plan.new_event())
    if kind == "expired":
        return ExpiredTimeout(draw(burns))
    if kind == "timer":
        return TimerTimeout(draw(st.integers(50, 2000)))
    if kind == "shield" and nested:
        return Shielded(_draw_local_ops(draw, plan, may_lock, may_sem, depth + 1))
    return None


def _draw_ops(draw, plan, depth, least, most):
    """A task's (or a child's) ops: local ones, and waits for higher tasks."""
    ops = []
    for _ in range(draw(st.integers(least, most))):
        kind = draw(st.sampled_from(TOP_KINDS))
        op = _draw_top_op(draw, plan, kind, depth)
        if op is not None:
            ops.append(op)
    return tuple(ops)


def _draw_top_op(draw, plan, kind, depth):
    if kind in LOCAL_KINDS:
        return _draw_local_op(draw, plan, kind, True, True, depth)
    if kind == "wait" and plan.higher_events:
        return WaitEvent(draw(st.sampled_from(plan.higher_events)))
    if kind == "notify":
        by = draw(st.integers(1, 3))
        plan.own_notified += by
        return Notify(by, draw(burns))
    if kind == "wait_for" and plan.higher_notified:
        return WaitFor(draw(st.integers(1, plan.higher_notified)))
    if kind == "group" and depth == 0:
        children = draw(st.integers(1, 3))
        return Group(tuple(_draw_ops(draw, plan, depth + 1, 0, 3) for _ in range(children)))
    if kind == "failing" and depth == 0:
        siblings = draw(st.integers(1, 3))
        return FailingGroup(tuple(_draw_local_ops(draw, plan, True, True, depth + 1, most=2)
                                  for _ in range(siblings)),
                            parent_waits=draw(st.booleans()))
    if kind == "generous" and depth == 0:
        return GenerousTimeout(_draw_ops(draw, plan, depth + 1, 1, 3))
    return None


@st.composite
def programs(draw):
    """A Program (see the module's docstring): tasks generated from the
    highest index down, so that each knows what the higher ones provide."""
    n = draw(st.integers(2, MAX_TASKS))
    # Victims (never task 0) and the lower task that cancels each.
    canceller = {}
    for j in range(1, n):
        if draw(st.booleans()):
            canceller[j] = draw(st.integers(0, j - 1))
    plan = _Plan()
    tasks, endings = [None] * n, [None] * n
    for i in reversed(range(n)):
        ops = list(_draw_ops(draw, plan, 0, 1, 5))
        for victim in sorted(j for j, c in canceller.items() if c == i):
            ops.insert(draw(st.integers(0, len(ops))), Cancel(victim))
        if i in canceller:
            if draw(st.booleans()):
                endings[i] = ShieldPark(_draw_local_ops(draw, plan, True, True, 1, most=2))
            else:
                endings[i] = Park()
        tasks[i] = ops
        plan.task_done()
    # The long critical section that makes every program meet preemption.
    home = draw(st.integers(0, n - 1))
    section = draw(st.sampled_from((LockSection, SemSection)))
    tasks[home].insert(draw(st.integers(0, len(tasks[home]))),
                       section((Burn(draw(st.integers(*LONG_SECTION_US)), until_preempted=True),)))
    return Program(
        tasks=tuple(map(tuple, tasks)),
        endings=tuple(endings),
        slots=draw(st.integers(1, 3)),
        bounded=draw(st.booleans()),
        maxsize=draw(st.integers(0, 3)),
        consumer_burns=tuple(draw(st.lists(burns, min_size=1, max_size=2))),
        cond_shares_lock=draw(st.booleans()),
    )


# -- The interpreter ----------------------------------------------------------------


class Boom(Exception):
    """A FailingGroup child's error."""


class Section:
    """The tasks inside a critical section (a set: its add and discard are
    single C calls that preemption cannot split), with at most `limit`
    allowed at once."""

    def __init__(self, name, limit, violations):
        self.name, self.limit, self.violations = name, limit, violations
        self.inside = set()

    def enter(self):
        me = object()
        self.inside.add(me)
        occupancy = len(self.inside)
        if occupancy > self.limit:
            self.violations.append(f"{occupancy} tasks inside the {self.name} at once (at most {self.limit})")
        return me

    def leave(self, me):
        self.inside.discard(me)


class ProgramRun:
    """One run of a Program on the running loop: `await run.main()` returns
    the schedule-independent result; `violations` lists the broken
    invariants; `preempted_in_sections` and `interleaved_in_sections`
    (evidence, not results) list the bursts inside a critical section
    during which the step was preempted, and during which another task's
    burst ran; `waits_for_preemption`, how the until_preempted bursts
    ended.

    lock_type replaces asyncio.Lock (the test that proves the checks catch a
    broken Lock); count_preemptions() is goloop's preemption counter, None
    on a loop that does not preempt."""

    def __init__(self, program, lock_type=asyncio.Lock, count_preemptions=None):
        self.program = program
        self.lock_type = lock_type
        self.preempting = count_preemptions is not None
        self.count_preemptions = count_preemptions or (lambda: 0)
        self.violations = []
        self.logs = {}
        self.preempted_in_sections = []
        self.interleaved_in_sections = []
        self.waits_for_preemption = []   # (preempted, wall s, CPU s of the wait)
        self.owner = None           # the burst that ran last (see burn)

    def check(self, condition, message):
        if not condition:
            self.violations.append(message)

    # -- setting up, running, summing up

    def _make_primitives(self):
        """A fresh set for each run: asyncio's primitives bind to the loop
        they are first used on."""
        p = self.program
        self.lock = self.lock_type()
        self.lock_section = Section("Lock", 1, self.violations)
        self.semaphore = (asyncio.BoundedSemaphore if p.bounded else asyncio.Semaphore)(p.slots)
        self.sem_section = Section(f"Semaphore({p.slots})", p.slots, self.violations)
        self.condition = asyncio.Condition(self.lock if p.cond_shares_lock else None)
        self.cond_section = (self.lock_section if p.cond_shares_lock
                             else Section("Condition's lock", 1, self.violations))
        self.queue = asyncio.Queue(p.maxsize)
        # All made here, before any task runs: a task preempted while it made
        # one on first use would let another task make a second one.
        self.events = {op.event: asyncio.Event() for op in all_ops(p) if isinstance(op, SetEvent)}
        self.events_set = set()
        self.never = asyncio.Event()            # nobody sets it: a wait for good
        self.parked = [asyncio.Event() for _ in p.tasks]
        self.victims = {}                       # a parked task, for its canceller
        self.released = [asyncio.Event() for _ in p.tasks]
        self.lock_counter = 0
        self.cond_counter = 0
        self.received = [[] for _ in p.consumer_burns]

    async def main(self):
        self._make_primitives()
        p = self.program
        tasks = [asyncio.create_task(self._run_task(i), name=f"t{i}") for i in range(len(p.tasks))]
        consumers = [asyncio.create_task(self._consume(c, count), name=f"consumer {c}")
                     for c, count in enumerate(consumer_counts(p))]
        try:
            async with asyncio.timeout(PROGRAM_LIMIT):
                await asyncio.wait(tasks)
                await asyncio.wait(consumers)
        except TimeoutError:
            self.violations.append(
                f"the program did not end within {PROGRAM_LIMIT} s (a deadlock or a lost wakeup); "
                f"still waiting: {_where_stuck(asyncio.all_tasks() - {asyncio.current_task()})}")
            return None
        for task in consumers:
            self._outcome(task, "a consumer")
        outcomes = [self._outcome(task, f"task {i}") for i, task in enumerate(tasks)]
        expected = ["done" if ending is None else "cancelled" for ending in p.endings]
        self.check(outcomes == expected, f"tasks ended {outcomes}, expected {expected}")
        left = asyncio.all_tasks() - {asyncio.current_task()}
        self.check(not left, f"tasks still pending at the end: {left}")
        free = await self._free_slots()
        self._check_totals(free)
        return dict(
            outcomes=outcomes,
            logs=self.logs,
            lock_counter=self.lock_counter,
            cond_counter=self.cond_counter,
            received=sorted(item for got in self.received for item in got),
            free_slots=free,
            queue_left=self.queue.qsize(),
        )

    def _outcome(self, task, name):
        if task.cancelled():
            return "cancelled"
        error = task.exception()
        if error is None:
            return "done"
        self.violations.append(f"{name} failed: " + "".join(traceback.format_exception(error)))
        return f"failed: {error!r}"

    async def _free_slots(self):
        """How many acquire() succeed at once, released again afterwards."""
        taken = 0
        while not self.semaphore.locked():
            await self.semaphore.acquire()
            taken += 1
        for _ in range(taken):
            self.semaphore.release()
        if self.program.bounded:
            try:
                self.semaphore.release()
            except ValueError:
                pass
            else:
                self.violations.append("a BoundedSemaphore accepted a release beyond its value")
        return taken

    def _check_totals(self, free):
        p = self.program
        ops = list(all_ops(p))
        sections = sum(isinstance(op, LockSection) for op in ops)
        notified = sum(op.by for op in ops if isinstance(op, Notify))
        self.check(self.lock_counter == sections,
                   f"the Lock's counter is {self.lock_counter} after {sections} sections: lost updates")
        self.check(self.cond_counter == notified,
                   f"the Condition's counter is {self.cond_counter} after adding {notified}: lost updates")
        self.check(free == p.slots, f"{free} of the Semaphore's {p.slots} slots free at the end")
        self.check(not self.lock.locked(), "the Lock is still held at the end")
        expected = sorted(_items_of_program(p))
        received = sorted(item for got in self.received for item in got)
        self.check(received == expected, f"items put {expected}, received {received}")
        self.check(self.queue.empty(), "items left in the Queue")
        for c, got in enumerate(self.received):
            by_producer = collections.defaultdict(list)
            for producer, seq in got:
                by_producer[producer].append(seq)
            for producer, seqs in by_producer.items():
                self.check(seqs == sorted(seqs),
                           f"consumer {c} received {producer}'s items out of order: {seqs}")

    # -- running ops

    def burn(self, us, held, until_preempted=False):
        """Pure-Python work for `us` µs of wall time, no await (see Burn for
        until_preempted).  When `held` (a critical section is held), note
        whether the step was preempted meanwhile (the counter moves only
        then: nothing else runs while this step does) and whether another
        burst ran in its middle (it finds another's mark)."""
        if us <= 0:
            return
        count = self.count_preemptions
        before = count()
        me = object()
        self.owner = me
        interleaved = False
        start = perf()
        end = start + us / 1e6
        while perf() < end:
            if self.owner is not me:
                interleaved = True
                self.owner = me
        if until_preempted and self.preempting:
            cpu_start = time.thread_time()
            give_up = cpu_start + PREEMPTION_WAIT_LIMIT
            while count() == before and time.thread_time() < give_up:
                pass
            self.waits_for_preemption.append(
                (count() != before, perf() - start, time.thread_time() - cpu_start))
        if held:
            if count() != before:
                self.preempted_in_sections.append(held)   # list.append: one C call
            if interleaved:
                self.interleaved_in_sections.append(held)

    async def _run_task(self, i):
        path = f"t{i}"
        await self.run_ops(self.program.tasks[i], path)
        ending = self.program.endings[i]
        if isinstance(ending, Park):
            await self._park(i, path)
        elif isinstance(ending, ShieldPark):
            await self._shield_park(i, ending, path)

    async def run_ops(self, ops, path, held=()):
        """Run `ops` in order; their outcomes go to logs[path]."""
        log = self.logs.setdefault(path, [])
        for index, op in enumerate(ops):
            run = getattr(self, "_do_" + type(op).__name__)
            log.append(await run(op, f"{path}.{index}", held))

    async def _do_Burn(self, op, path, held):
        self.burn(op.us, held, op.until_preempted)
        return "burn"

    async def _do_Yield(self, op, path, held):
        await asyncio.sleep(0)
        return "yield"

    async def _do_LockSection(self, op, path, held):
        async with self.lock:
            me = self.lock_section.enter()
            try:
                counter = self.lock_counter
                await self.run_ops(op.body, path, held + ("Lock",))
                self.lock_counter = counter + 1     # lost if another task was let in meanwhile
            finally:
                self.lock_section.leave(me)
        return "lock"

    async def _do_SemSection(self, op, path, held):
        async with self.semaphore:
            me = self.sem_section.enter()
            try:
                await self.run_ops(op.body, path, held + ("Semaphore",))
            finally:
                self.sem_section.leave(me)
        return "sem"

    async def _do_Put(self, op, path, held):
        producer, _, index = path.rpartition(".")
        for k in range(op.items):
            await self.queue.put((producer, (int(index), k)))
        return ("put", op.items)

    async def _consume(self, c, count):
        got, us = self.received[c], self.program.consumer_burns[c]
        for _ in range(count):
            got.append(await self.queue.get())
            self.burn(us, ())
            self.queue.task_done()

    async def _do_SetEvent(self, op, path, held):
        self.events_set.add(op.event)           # before set(): a waiter must see it
        self.events[op.event].set()
        return ("set", op.event)

    async def _do_WaitEvent(self, op, path, held):
        await self.events[op.event].wait()
        self.check(op.event in self.events_set and self.events[op.event].is_set(),
                   f"Event {op.event}'s waiter released before set() ({path})")
        return ("wait", op.event)

    async def _do_Notify(self, op, path, held):
        async with self.condition:
            me = self.cond_section.enter()
            try:
                counter = self.cond_counter
                self.burn(op.us, held + ("Condition",))
                self.cond_counter = counter + op.by
            finally:
                self.cond_section.leave(me)
            self.condition.notify_all()
        return ("notify", op.by)

    async def _do_WaitFor(self, op, path, held):
        async with self.condition:
            await self.condition.wait_for(lambda: self.cond_counter >= op.at_least)
            self.check(self.cond_counter >= op.at_least and self.condition.locked(),
                       f"wait_for(counter >= {op.at_least}) returned with {self.cond_counter} "
                       f"(lock held: {self.condition.locked()}) ({path})")
            self.cond_section.leave(self.cond_section.enter())
        return ("wait_for", op.at_least)

    async def _do_Group(self, op, path, held):
        async with asyncio.TaskGroup() as group:
            children = [group.create_task(self.run_ops(ops, f"{path}.c{k}"))
                        for k, ops in enumerate(op.children)]
        done = [c.done() and not c.cancelled() and c.exception() is None for c in children]
        self.check(all(done), f"TaskGroup exited with children not done: {done} ({path})")
        return ("group", len(children))

    async def _do_FailingGroup(self, op, path, held):
        parked = [asyncio.Event() for _ in op.siblings]

        async def sibling(k, ops):
            await self.run_ops(ops, f"{path}.s{k}")
            parked[k].set()
            await self.never.wait()

        async def fail_once_all_parked():
            for event in parked:
                await event.wait()
            raise Boom()

        errors = []
        try:
            async with asyncio.TaskGroup() as group:
                siblings = [group.create_task(sibling(k, ops)) for k, ops in enumerate(op.siblings)]
                group.create_task(fail_once_all_parked())
                if op.parent_waits:
                    await self.never.wait()
        except* Boom as raised:
            errors = raised.exceptions
        cancelled = sum(s.cancelled() for s in siblings)
        self.check(len(errors) == 1 and cancelled == len(siblings),
                   f"failing TaskGroup: errors {errors}, "
                   f"{cancelled} of {len(siblings)} siblings cancelled ({path})")
        return ("failing_group", len(errors), cancelled)

    async def _do_ExpiredTimeout(self, op, path, held):
        before_await = after_await = timed_out = False
        try:
            async with asyncio.timeout(0):
                self.burn(op.us, held)
                before_await = True
                await asyncio.sleep(0)
                after_await = True
        except TimeoutError:
            timed_out = True
        self.check(timed_out and before_await and not after_await,
                   f"expired timeout: TimeoutError {timed_out}, code before the await ran "
                   f"{before_await}, after it {after_await} ({path})")
        return ("expired_timeout", timed_out, after_await)

    async def _do_TimerTimeout(self, op, path, held):
        timed_out = False
        try:
            async with asyncio.timeout(op.us / 1e6):
                await self.never.wait()
        except TimeoutError:
            timed_out = True
        self.check(timed_out, f"a timeout around a wait for good ended without TimeoutError ({path})")
        return ("timer_timeout", timed_out)

    async def _do_GenerousTimeout(self, op, path, held):
        timed_out = False
        try:
            async with asyncio.timeout(PROGRAM_LIMIT):
                await self.run_ops(op.body, path, held)
        except TimeoutError:
            timed_out = True
        self.check(not timed_out, f"a {PROGRAM_LIMIT} s timeout fired ({path})")
        return ("generous_timeout", timed_out)

    async def _do_Shielded(self, op, path, held):
        await asyncio.shield(self.run_ops(op.body, path, held))
        return "shielded"

    async def _do_Cancel(self, op, path, held):
        await self.parked[op.victim].wait()
        victim = self.victims[op.victim]
        victim.cancel()
        self.released[op.victim].set()
        await asyncio.wait([victim])
        self.check(victim.cancelled(), f"task {op.victim} not cancelled by its canceller ({path})")
        return ("cancel", op.victim, victim.cancelled())

    def _announce_parked(self, i, path):
        # The victim gives its canceller its Task: main's list of tasks may
        # not be assigned yet, if main was preempted while making it.
        self.victims[i] = asyncio.current_task()
        self.logs[path].append("parked")
        self.parked[i].set()

    async def _park(self, i, path):
        self._announce_parked(i, path)
        await self.never.wait()
        self.violations.append(f"task {i} woke from a wait for good")

    async def _shield_park(self, i, ending, path):
        async def inner():
            await self.run_ops(ending.inner, f"{path}.inner")
            await self.released[i].wait()     # the canceller sets it right after cancel()
            return "inner done"

        protected = asyncio.create_task(inner())
        self._announce_parked(i, path)
        try:
            await asyncio.shield(protected)
        except asyncio.CancelledError:
            try:
                result = await protected
            except asyncio.CancelledError:
                result = "inner cancelled"
            self.check(result == "inner done",
                       f"task {i}'s shielded inner task was cancelled with the task awaiting it")
            self.logs[path].append(("shield_held", result))
            raise
        self.violations.append(f"task {i}'s shield() returned though its inner task waits for the cancel")


def _where_stuck(tasks):
    """Each pending task's name and the innermost op it is running."""
    where = []
    for task in sorted(tasks, key=lambda t: t.get_name()):
        paths = [f.f_locals["path"] for f in task.get_stack() if "path" in f.f_locals]
        frames = task.get_stack(limit=1)
        code = frames[0].f_code.co_name if frames else "?"
        where.append(f"{task.get_name()} in {code} ({paths[-1] if paths else 'no op'})")
    return "; ".join(where)


def _items_of_program(program):
    """Every item the program puts: (the op list's path, (op index, k))."""
    items = []

    def visit(ops, path):
        for index, op in enumerate(ops):
            here = f"{path}.{index}"
            if isinstance(op, Put):
                items.extend((path, (index, k)) for k in range(op.items))
            elif isinstance(op, (LockSection, SemSection, Shielded, GenerousTimeout)):
                visit(op.body, here)
            elif isinstance(op, Group):
                for k, child in enumerate(op.children):
                    visit(child, f"{here}.c{k}")
            elif isinstance(op, FailingGroup):
                for k, sibling in enumerate(op.siblings):
                    visit(sibling, f"{here}.s{k}")

    for i, (ops, ending) in enumerate(zip(program.tasks, program.endings)):
        visit(ops, f"t{i}")
        if isinstance(ending, ShieldPark):
            visit(ending.inner, f"t{i}.inner")
    return items
