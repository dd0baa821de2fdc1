"""goloop.await_(): await from plain synchronous code inside a task step
(csrc/loop/await.c).  What it returns and raises, what runs meanwhile, the
task it runs in (current_task, contextvars, cancellation, timeouts,
tracebacks), where it refuses, and real uses: a synchronous callback API,
a blocking-style facade over an async client, a template hook."""
import asyncio
import contextvars
import gc
import string
import sys
import threading
import time
import traceback

import pytest

import goloop

from loop_helpers import make_loop

CV = contextvars.ContextVar("CV", default="unset")


def run(main, **options):
    with asyncio.Runner(loop_factory=lambda: goloop.new_event_loop(**options)) as runner:
        return runner.run(main())


def sync_call(awaitable):
    """A plain function between the task's coroutine and await_()."""
    return goloop.await_(awaitable)


# ---- results and what runs meanwhile -------------------------------------


def test_returns_the_result_and_other_tasks_run_meanwhile():
    async def main():
        log = []

        async def other():
            for i in range(5):
                log.append(i)
                await asyncio.sleep(0.001)

        t = asyncio.create_task(other())
        r = sync_call(asyncio.sleep(0.05, result="slept"))
        # The other task ran while this one waited in await_().
        seen = list(log)
        await t
        return r, seen

    r, seen = run(main)
    assert r == "slept"
    assert seen == [0, 1, 2, 3, 4]


def test_awaits_futures_tasks_bare_yields_and_custom_awaitables():
    class Awaitable:
        def __await__(self):
            yield   # a bare yield: the loop's next iteration
            return "custom"

    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_later(0.01, fut.set_result, 42)

        async def child():
            await asyncio.sleep(0)
            return "task"

        task = asyncio.create_task(child())
        return (sync_call(fut), sync_call(task), sync_call(Awaitable()),
                sync_call(asyncio.sleep(0)))

    assert run(main) == (42, "task", "custom", None)


def test_nested_await_inside_an_awaited_coroutine():
    async def inner(n):
        if n == 0:
            await asyncio.sleep(0)
            return 0
        return 1 + sync_call(inner(n - 1))

    async def main():
        return sync_call(inner(20))

    assert run(main) == 20


def test_many_tasks_wait_at_once():
    async def one(i):
        return sync_call(asyncio.sleep(0.01 * (i % 5), result=i))

    async def main():
        return await asyncio.gather(*(one(i) for i in range(200)))

    assert run(main) == list(range(200))


# ---- the task it runs in ------------------------------------------------------


def test_runs_inside_the_calling_task_and_its_context():
    async def inner():
        await asyncio.sleep(0)
        CV.set("set inside")   # the task's context: seen after await_ returns
        return asyncio.current_task()

    async def main():
        CV.set("outer")
        me = asyncio.current_task()
        seen = sync_call(inner())
        return seen is me, asyncio.current_task() is me, CV.get()

    assert run(main) == (True, True, "set inside")


def test_current_task_while_waiting_is_whoever_runs():
    async def main():
        me = asyncio.current_task()
        seen = []

        async def other():
            seen.append(asyncio.current_task())

        t = asyncio.create_task(other())
        sync_call(asyncio.sleep(0.01))
        await t
        return seen == [t], asyncio.current_task() is me

    assert run(main) == (True, True)


def test_exception_comes_out_with_both_frames_in_the_traceback():
    async def failing():
        await asyncio.sleep(0)
        raise ValueError("from the awaitable")

    async def main():
        try:
            sync_call(failing())
        except ValueError as e:
            return [f.name for f in traceback.extract_tb(e.__traceback__)]

    names = run(main)
    assert names[:3] == ["main", "sync_call", "failing"], names


def test_the_awaitables_frames_sit_on_the_sync_callers():
    async def inner():
        await asyncio.sleep(0)
        f = sys._getframe()
        return [f.f_code.co_name, f.f_back.f_code.co_name, f.f_back.f_back.f_code.co_name]

    async def main():
        return sync_call(inner())

    assert run(main) == ["inner", "sync_call", "main"]


# ---- cancellation and timeouts ------------------------------------------------


def test_cancel_raises_cancelled_error_out_of_await():
    async def main():
        got = []

        async def victim():
            try:
                sync_call(asyncio.sleep(10))
            except asyncio.CancelledError as e:
                got.append(e.args)
                raise

        v = asyncio.create_task(victim())
        await asyncio.sleep(0.01)
        assert "wait_for=" in repr(v)   # it waits on the sleep's future, as with await
        v.cancel("stop it")
        with pytest.raises(asyncio.CancelledError):
            await v
        return got, v.cancelled()

    assert run(main) == ([("stop it",)], True)


def test_cancel_during_a_bare_yield():
    async def main():
        class YieldForever:
            def __await__(self):
                while True:
                    yield

        async def victim():
            sync_call(YieldForever())

        v = asyncio.create_task(victim())
        await asyncio.sleep(0.01)
        v.cancel()
        with pytest.raises(asyncio.CancelledError):
            await v
        return v.cancelled()

    assert run(main) is True


def test_timeout_around_a_sync_call():
    async def main():
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                sync_call(asyncio.sleep(30))
        # The task goes on, uncancelled, as after any timeout.
        await asyncio.sleep(0)
        return time.monotonic() - t0, asyncio.current_task().cancelling()

    took, cancelling = run(main)
    assert took < 10   # not the 30 s sleep
    assert cancelling == 0


def test_timeout_that_expires_while_the_awaited_code_computes():
    """The timeout's cancel() reaches the task while its step runs (or is
    preempted); it takes effect at the awaitable's next await, as on stock
    asyncio, not once the whole synchronous call is over."""
    async def computes_then_sleeps():
        busy = time.monotonic() + 0.3
        while time.monotonic() < busy:
            pass
        await asyncio.sleep(30)
        return "slept"

    async def main():
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                sync_call(computes_then_sleeps())
        return time.monotonic() - t0

    for options in ({}, {"time_slice": 0.005}, {"preempt": False}):
        assert run(main, **options) < 10, options


def test_wait_for_around_a_coroutine_that_waits_in_sync_code():
    async def work():
        return sync_call(asyncio.sleep(30))

    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(work(), 0.05)
        return "ok"

    assert run(main) == "ok"


def test_cancellation_can_be_caught_inside_the_awaitable():
    async def stubborn():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            asyncio.current_task().uncancel()
            return "caught"

    async def main():
        async def victim():
            return sync_call(stubborn())

        v = asyncio.create_task(victim())
        await asyncio.sleep(0.01)
        v.cancel()
        return await v

    assert run(main) == "caught"


# ---- where it refuses ---------------------------------------------------------


def test_outside_a_loop_raises_runtime_error_and_closes_the_coroutine():
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="task on a goloop event loop"):
        goloop.await_(coro)
    assert coro.cr_frame is None   # closed: no "never awaited" warning


@pytest.mark.parametrize("where", ["callback", "goroutines=False", "stock asyncio", "thread"])
def test_refused_where_no_task_step_runs_on_a_goroutine(where):
    async def main():
        loop = asyncio.get_running_loop()
        if where == "callback":
            fut = loop.create_future()

            def callback():
                try:
                    goloop.await_(asyncio.sleep(0))
                except RuntimeError as e:
                    fut.set_result(e)

            loop.call_soon(callback)
            return await fut
        if where == "thread":
            def in_thread():
                try:
                    goloop.await_(asyncio.sleep(0))
                except RuntimeError as e:
                    return e
            return await loop.run_in_executor(None, in_thread)
        try:
            goloop.await_(asyncio.sleep(0))
        except RuntimeError as e:
            return e

    if where == "stock asyncio":
        err = asyncio.run(main())
    else:
        err = run(main, goroutines=where != "goroutines=False")
    assert isinstance(err, RuntimeError)
    assert "task on a goloop event loop" in str(err)


def test_refused_inside_atomic():
    async def main():
        with goloop.atomic():
            with pytest.raises(RuntimeError, match="atomic"):
                goloop.await_(asyncio.sleep(0))
        return sync_call(asyncio.sleep(0, result="outside atomic"))

    assert run(main) == "outside atomic"


def test_not_awaitable_is_a_type_error():
    async def main():
        with pytest.raises(TypeError, match="can't be awaited"):
            goloop.await_(42)
        with pytest.raises(TypeError):
            goloop.await_()
        return "ok"

    assert run(main) == "ok"


def test_future_of_another_loop_and_awaiting_itself():
    async def main():
        other = make_loop("goloop")
        try:
            with pytest.raises(RuntimeError, match="different loop"):
                sync_call(other.create_future())
        finally:
            other.close()
        with pytest.raises(RuntimeError, match="await on itself"):
            sync_call(asyncio.current_task())
        return "ok"

    assert run(main) == "ok"


def test_pure_python_task_and_eager_tasks():
    async def current():
        await asyncio.sleep(0.01)
        return asyncio.current_task()

    async def child():
        # What current_task() says inside the awaitable is what it says in
        # the task (None for a pure-Python Task on 3.14+, as on stock: the
        # C current_task() does not see it).
        return asyncio.current_task(), sync_call(current())

    async def main():
        loop = asyncio.get_running_loop()
        py = asyncio.tasks._PyTask(child(), loop=loop)
        outside, inside = await py
        assert inside is outside
        assert outside is (None if sys.version_info >= (3, 14) else py)
        if hasattr(asyncio, "eager_task_factory"):
            loop.set_task_factory(asyncio.eager_task_factory)
            t = asyncio.create_task(child())
            assert await t == (t, t)
            loop.set_task_factory(None)
        return "ok"

    assert run(main) == "ok"


# ---- preemption ------------------------------------------------------------------


def test_code_awaited_through_await_is_preempted():
    async def hog():
        await asyncio.sleep(0)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            pass

    async def main():
        served = []

        async def light():
            t0 = time.monotonic()
            await asyncio.sleep(0.01)
            served.append(time.monotonic() - t0)

        before = goloop.stats()["preemptions"]
        h = asyncio.create_task(asyncio.to_thread(lambda: None))
        await h
        work = asyncio.create_task(asyncio.sleep(0))
        await work

        async def hog_task():
            sync_call(hog())

        hog_t = asyncio.create_task(hog_task())
        await asyncio.sleep(0.05)
        lights = [asyncio.create_task(light()) for _ in range(3)]
        await asyncio.gather(*lights)
        hog_done_first = hog_t.done()
        await hog_t
        return goloop.stats()["preemptions"] - before, served, hog_done_first

    preempted, served, hog_done_first = run(main, time_slice=0.002)
    assert preempted >= 1
    assert not hog_done_first   # the light tasks were served during the hog
    assert max(served) < 0.4


# ---- lifetime -----------------------------------------------------------------


def test_no_workers_or_tasks_left_behind():
    async def one():
        return sync_call(asyncio.sleep(0))

    async def main():
        for _ in range(300):
            await asyncio.create_task(one())

    run(main)   # warm the pools
    gc.collect()
    live = goloop.stats()["goroutines_live"]
    run(main)
    gc.collect()
    assert goloop.stats()["goroutines_live"] <= live


def test_loop_shutdown_cancels_a_task_waiting_forever():
    done = []

    async def main():
        async def waiter():
            try:
                sync_call(asyncio.get_running_loop().create_future())
            finally:
                done.append("unwound")

        asyncio.create_task(waiter())
        await asyncio.sleep(0.01)

    run(main)   # asyncio.Runner cancels what is left
    assert done == ["unwound"]


# ---- real uses --------------------------------------------------------------------


async def lookup(key):
    await asyncio.sleep(0.001)
    return {"b": 1, "c": 2, "a": 3}[key]


def test_sync_callback_api_needing_an_async_call():
    async def main():
        # sorted() calls its key synchronously; the key needs the network.
        return sorted(["a", "b", "c"], key=lambda k: goloop.await_(lookup(k)))

    assert run(main) == ["b", "c", "a"]


def test_template_hook_that_fetches_asynchronously():
    class AsyncMapping(dict):
        def __missing__(self, key):
            return goloop.await_(lookup(key))

    async def main():
        return string.Formatter().vformat("{a}-{b}-{c}", (), AsyncMapping())

    assert run(main) == "3-1-2"


class BlockingClient:
    """A blocking-style facade over an async client: what a library with a
    synchronous API offers, implemented with asyncio streams underneath."""

    def __init__(self, host, port):
        self.reader, self.writer = goloop.await_(asyncio.open_connection(host, port))

    def call(self, line):
        self.writer.write(line.encode() + b"\n")
        goloop.await_(self.writer.drain())
        return goloop.await_(self.reader.readline()).decode().strip()

    def close(self):
        self.writer.close()
        goloop.await_(self.writer.wait_closed())


def test_blocking_facade_over_an_async_client_from_async_code():
    async def main():
        async def echo(reader, writer):
            while line := await reader.readline():
                writer.write(line.upper())
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        def blocking_session(words):
            client = BlockingClient("127.0.0.1", port)
            try:
                return [client.call(w) for w in words]
            finally:
                client.close()

        async def session(words):
            return blocking_session(words)

        results = await asyncio.gather(*(session([f"w{i}", f"x{i}"]) for i in range(10)))
        server.close()
        await server.wait_closed()
        return results

    assert run(main) == [[f"W{i}", f"X{i}"] for i in range(10)]


def test_each_thread_its_own_loop():
    results = []

    async def main():
        return sync_call(asyncio.sleep(0.01, result=threading.current_thread().name))

    t = threading.Thread(target=lambda: results.append(run(main)), name="other")
    t.start()
    t.join()
    assert results == ["other"]


def test_await_cycles_leak_nothing():
    async def ok():
        await asyncio.sleep(0)
        return 1

    async def bad():
        await asyncio.sleep(0)
        raise ValueError("bad")

    async def main(n):
        for i in range(n):
            try:
                sync_call(ok() if i % 2 else bad())
            except ValueError:
                pass
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        for _ in range(n):
            sync_call(fut)   # done already: no suspension

    with asyncio.Runner(loop_factory=goloop.new_event_loop) as runner:
        runner.run(main(2_000))   # warm-up: free lists, caches
        gc.collect()
        blocks0 = sys.getallocatedblocks()
        runner.run(main(20_000))
        gc.collect()
        grown = sys.getallocatedblocks() - blocks0
    assert grown < 300, grown
