"""Probe: greenback's ensure_portal()/await_() among preempted tasks.

    python greenback_probe.py TIME_SLICE [--unsafe]

Ten tasks get a greenback portal and call, twenty times each, a plain
function that computes, awaits through greenback.await_() and computes
again, while two tasks compute in 20 ms steps and get preempted; every fifth
call starts a task that computes for 5 ms in one step, right before the
portal task's next step.  A portal
runs the task's coroutine in a greenlet started in the task's first step,
which every later step switches into.  Prints one JSON line.
"""
import asyncio
import json
import sys

import greenback

import goloop
from probe_common import burn, start

SLICE = float(sys.argv[1])
start(30, greenlets=True, libraries=True)


async def hog(stop):
    while not stop.is_set():
        burn(0.02)
        await asyncio.sleep(0)


def plain_function(i, k):
    burn(0.001)
    value = greenback.await_(asyncio.sleep(0, result=i * 100 + k))
    burn(0.001)
    return value


async def burner():
    burn(0.005)


async def portal_task(i):
    await greenback.ensure_portal()
    out, burners = [], []
    for k in range(20):
        out.append(plain_function(i, k))
        if k % 5 == 1:
            # Its step runs just before this task's next one and takes the
            # worker this step gives back, where this task's greenlets live:
            # preempted there, it holds them while this task steps on.
            burners.append(asyncio.create_task(burner()))
        await asyncio.sleep(0)
    await asyncio.gather(*burners)
    return out


async def main():
    stop = asyncio.Event()
    hogs = [asyncio.create_task(hog(stop)) for _ in range(2)]
    results = await asyncio.gather(*(portal_task(i) for i in range(10)))
    stop.set()
    await asyncio.gather(*hogs)
    return results


before = goloop.stats()["preemptions"]
results = goloop.run(main(), time_slice=SLICE)
print(json.dumps({"correct": results == [[i * 100 + k for k in range(20)] for i in range(10)],
                  "preemptions": goloop.stats()["preemptions"] - before}))
