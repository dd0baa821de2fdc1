"""Memory of idle tasks: the RSS that 100,000 tasks suspended at an await cost.

goloop runs every task step on a goroutine, but a task suspended at an
await holds no stack (design.md 3), so its tasks should cost what asyncio's
cost (target: goloop / asyncio <= 1.2).  N tasks are created and each runs
to an await on an asyncio.Event that is set only after the measurement, so
all N are suspended at once.  What is measured is the growth of the resident
set (RSS, from /proc/self/statm) between a baseline -- taken after the
interpreter started, imported everything, created the loop and ran it once
-- and the moment all N tasks are suspended.  goloop's row also tells how
many stacks and goroutines were in use while they were (a worker's, not N).
"""
import asyncio
import gc
import os
import sys

from benchmarks import loops
from benchmarks.workload import Metric, Workload, size

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def goloop_stacks():
    """goloop's stacks and goroutines in use; {} on other loops."""
    goloop = sys.modules.get("goloop")
    if goloop is None:
        return {}
    stats = goloop.stats()
    return {key: stats[key] for key in ("stacks_in_use", "goroutines_live")}


async def suspend(n, baseline):
    """RSS growth over `baseline` with n tasks suspended at once, and goloop's counts then."""
    event, started = asyncio.Event(), [0]

    async def idle():
        started[0] += 1
        await event.wait()

    tasks = [asyncio.ensure_future(idle()) for _ in range(n)]
    while started[0] < n:
        await asyncio.sleep(0)
    gc.collect()
    metrics = {"rss_mb": (rss_bytes() - baseline) / 2**20} | goloop_stacks()
    metrics["bytes_per_task"] = metrics["rss_mb"] * 2**20 / n
    event.set()
    await asyncio.gather(*tasks)
    return metrics


def suspended_tasks(loop_name, quick):
    n = size(100_000, 30_000, quick)
    with loops.runner(loop_name) as runner:
        # what a first run allocates once (code objects, the first worker
        # goroutine, free lists) is not the tasks' cost
        runner.run(asyncio.sleep(0))
        gc.collect()
        return runner.run(suspend(n, rss_bytes()))


WORKLOADS = [
    Workload("100k suspended tasks", "memory", suspended_tasks,
             (Metric("rss_mb", "MB"), Metric("bytes_per_task", "B"),
              Metric("stacks_in_use", "stacks"), Metric("goroutines_live", "goroutines")),
             note="suspended tasks: target goloop/asyncio <= 1.2 (a suspended task holds no stack)"),
]
