"""Probe: greenback's ensure_portal()/await_() among preempted tasks.

    python greenback_probe.py TIME_SLICE [--unsafe]

Ten tasks get a greenback portal and call, twenty times each, a plain
function that computes, awaits through greenback.await_() and computes
again, while two tasks compute in 20 ms steps and get preempted.  A portal
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
start(30, greenlets=True)


async def hog(stop):
    while not stop.is_set():
        burn(0.02)
        await asyncio.sleep(0)


def plain_function(i, k):
    burn(0.001)
    value = greenback.await_(asyncio.sleep(0, result=i * 100 + k))
    burn(0.001)
    return value


async def portal_task(i):
    await greenback.ensure_portal()
    out = []
    for k in range(20):
        out.append(plain_function(i, k))
        await asyncio.sleep(0)
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
