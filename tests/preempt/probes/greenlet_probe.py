"""Probe: tasks that switch greenlets, among tasks that get preempted.

    python greenlet_probe.py TIME_SLICE [--unsafe]

Ten tasks each start a child greenlet in their first step and switch into
it again from each later step (the child computes a little and switches
back to the task, which awaits), while two tasks compute in 20 ms steps
and get preempted, holding their workers.  Each step of a greenlet task
also computes on the task's own (main) greenlet, where it may be preempted
too.  Every child must return the sum it was fed.  Without goloop keeping
each such task on its worker (--unsafe), a later step switches into a
child from another worker's stack, greenlet copies the child's saved stack
over that worker's live frames, and the process crashes or computes wrong
sums.  Prints one JSON line.
"""
import asyncio
import json
import sys

import greenlet

import goloop
from probe_common import burn, start

SLICE = float(sys.argv[1])
start(30, greenlets=True, libraries=True)


async def hog():
    for _ in range(20):
        burn(0.02)
        await asyncio.sleep(0)


async def greenlet_task():
    task_greenlet = greenlet.getcurrent()

    def child():
        total = 0
        for k in range(30):
            burn(0.0005)
            total += task_greenlet.switch(k)     # back to the task's step
        return total

    g = greenlet.greenlet(child)
    value = g.switch()                           # started in this step ...
    while not g.dead:
        await asyncio.sleep(0)
        burn(0.002)                              # preemptible (main greenlet)
        value = g.switch(value)                  # ... switched into from later ones
    return value


async def main():
    hogs = [asyncio.create_task(hog()) for _ in range(2)]
    results = await asyncio.gather(*(greenlet_task() for _ in range(10)))
    await asyncio.gather(*hogs)
    return results


before = goloop.stats()["preemptions"]
results = goloop.run(main(), time_slice=SLICE)
print(json.dumps({"correct": results == [sum(range(30))] * 10,
                  "preemptions": goloop.stats()["preemptions"] - before}))
