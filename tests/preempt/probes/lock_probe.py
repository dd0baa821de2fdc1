"""Probe: do task steps of one thread ever meet inside a threading lock?

    python lock_probe.py KIND TIME_SLICE [--unsafe]

Four tasks each enter a section guarded by a lock of KIND five times, with
`await asyncio.sleep(0)` and some unguarded work between sections; each
section computes for three time slices, so a preempting loop is asked to
stop it mid-way.  Run for `with` blocks and acquire()/release() pairs, on a
lock made before goloop was imported and on one made after.  Prints one
JSON line: sections that overlapped another task's (must be 0), and the
preemptions and deferred preemption requests made.  A deadlock (a step
blocked in acquire() on the loop's own thread) is caught by faulthandler,
which dumps every thread's stack and exits with status 1.

KIND: Lock, RLock, Condition, Semaphore, BoundedSemaphore, logging (a
logging.Handler whose emit() computes: the handler's own RLock, made by
the logging module).  --unsafe turns goloop's lock counting off, and its
rule that a library's code (logging's, here) is preempted only at an
await: the control that shows the probe catches what it is meant to.
"""
import json
import logging
import sys
import threading
import time

from probe_common import burn, start

KIND, SLICE = sys.argv[1], float(sys.argv[2])
SECTION = max(3 * SLICE, 0.004)
state = {"inside": 0, "overlaps": 0, "sections": 0}


def section():
    state["inside"] += 1
    state["overlaps"] += state["inside"] > 1
    burn(SECTION)
    state["sections"] += 1
    state["inside"] -= 1


class BurningHandler(logging.Handler):
    def emit(self, record):     # called with self.lock (an RLock) held
        section()


def make_lock():
    if KIND == "Condition":
        return threading.Condition()
    if KIND == "logging":
        logger = logging.getLogger(f"probe{id(state)}{time.perf_counter()}")
        logger.propagate = False
        logger.addHandler(BurningHandler())
        return logger
    return getattr(threading, KIND)()


made_before = make_lock()      # before goloop is imported
import asyncio  # noqa: E402
import goloop  # noqa: E402

start(30, locks=True, libraries=True)


def guarded(lock, style):
    if KIND == "logging":
        lock.warning("x")
    elif style == "with":
        with lock:
            section()
    else:
        lock.acquire()
        try:
            section()
        finally:
            lock.release()


async def task(lock, style):
    for _ in range(5):
        guarded(lock, style)
        await asyncio.sleep(0)
        burn(SECTION)           # unguarded: may (and should) be preempted


async def main(lock, style):
    await asyncio.gather(*(task(lock, style) for _ in range(4)))


before = goloop.stats()
for lock in (made_before, make_lock()):
    for style in ("with", "pair"):
        goloop.run(main(lock, style), time_slice=SLICE)
after = goloop.stats()
print(json.dumps({
    "overlaps": state["overlaps"], "sections": state["sections"],
    "preemptions": after["preemptions"] - before["preemptions"],
    "deferred": after["preempt_deferred"] - before["preempt_deferred"],
}))
