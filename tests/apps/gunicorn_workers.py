"""gunicorn worker classes that run uvicorn on a chosen event loop, as a
user would write them, for test_gunicorn.py; and, used as a gunicorn config
module (`-c python:gunicorn_workers`), an `on_starting` hook that runs an
event loop in the master before it forks.

uvicorn's UvicornWorker takes its uvicorn settings from CONFIG_KWARGS; its
"loop" accepts a "module:callable" loop factory, so goloop needs no code of
its own, only a subclass.  The stock counterpart names "asyncio" because
UvicornWorker's "auto" would pick uvloop, which is installed here.

The hook leaves loop state in the master — goloop's sysmon thread started,
preemptions counted, stacks cached — as a `--preload` app that ran async
setup code on goloop at import would.  gunicorn then forks its workers from
that process, so the workers' own loops show whether goloop's per-process
state survived the fork (sysmon is a thread: it does not).
"""
import asyncio
import time
import warnings

with warnings.catch_warnings():
    # uvicorn.workers warns that it moved to the uvicorn-worker package; the
    # class is the same, and this module's point is the loop it names.
    warnings.simplefilter("ignore", DeprecationWarning)
    from uvicorn.workers import UvicornWorker


class GoloopUvicornWorker(UvicornWorker):
    """uvicorn on goloop (its time slice from GOLOOP_TIME_SLICE)."""

    CONFIG_KWARGS = {"loop": "goloop:new_event_loop", "http": "httptools"}


class AsyncioUvicornWorker(UvicornWorker):
    """uvicorn on stock asyncio: the baseline the tests compare with."""

    CONFIG_KWARGS = {"loop": "asyncio", "http": "httptools"}


MASTER_WARM_UP_SECONDS = 0.1   # 100 slices of 1 ms: preempted many times


async def _compute_beside_a_timer(seconds):
    """A CPU-bound task and a timer task: on goloop the first is preempted."""
    end = time.perf_counter() + seconds

    async def compute():
        while time.perf_counter() < end:
            sum(i * i for i in range(200))

    await asyncio.gather(compute(), asyncio.sleep(0.001))


def on_starting(server):
    """gunicorn hook, in the master before any worker exists: run a loop of
    the workers' kind with a CPU-bound task, and log what it did."""
    if issubclass(server.worker_class, GoloopUvicornWorker):
        import goloop

        goloop.run(_compute_beside_a_timer(MASTER_WARM_UP_SECONDS))
        done = f"goloop preemptions={goloop.stats()['preemptions']}"
    else:
        asyncio.run(_compute_beside_a_timer(MASTER_WARM_UP_SECONDS))
        done = "asyncio"
    server.log.info("master warm-up ran on %s", done)
