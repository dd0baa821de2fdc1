"""Scheduling: what the loop itself costs per callback, task step, task and message.

No I/O and no work in the callbacks or tasks, so these time the loop's own
machinery -- the part goloop's native core is meant to make fast:

call_soon 1M            1,000,000 loop.call_soon() of a callback that does
                        nothing, from the first call to the last callback run.
timers half cancelled   100,000 loop.call_later() of a callback that counts,
                        with distinct delays spread over 1 ms ((i % 1000) µs,
                        so that the timer machinery, not the sleeping, takes
                        the time), every second handle cancelled once all are
                        scheduled (all in one plain callback, which goloop
                        does not preempt): from the first call_later() to the
                        50,000th callback run.  Fails unless exactly 50,000 ran.
await sleep(0) step     a task awaiting asyncio.sleep(0) 200,000 times: one
                        task step and one loop iteration each (µs per step).
sleep(0), idle sockets  the same with 1,000 sockets (500 socketpairs) each
                        registered with loop.add_reader() and never readable,
                        as a server's idle connections are: a loop that polls
                        for I/O on every iteration pays a syscall per step
                        while work is ready (with epoll, one whatever the
                        number of idle fds); one that skips those polls while
                        work is ready does not.
gather 100k tasks       asyncio.gather() of 100,000 coroutines that return at
                        once: creating, stepping and collecting tasks.
Queue ping-pong         two tasks pass a token through two asyncio.Queues,
                        200,000 messages (100,000 round trips).
goroutine switch        loop-independent, so measured once, under "goloop":
                        a Python-visible goroutine round trip (g.resume() of a
                        goroutine looping on goloop.park()) against greenlet's
                        switch round trip of the same shape, and the raw C
                        switch and C resume+park of the runtime underneath.
                        Each the best of a few passes in the process: the
                        minimum is the least noisy estimate of a fixed cost.
await_ vs await         goloop only: the cost of goloop.await_() from a plain
                        function against a plain `await` in the coroutine, on
                        the same goloop loop, over the same 100,000
                        asyncio.sleep(0) (each a suspension: one loop
                        iteration); and against greenback.await_() (greenlet
                        based) when greenback is installed.  The best of 3
                        passes each (µs per suspension); the ratios are the
                        headline.
"""
import asyncio
import resource
import socket
import time

from benchmarks import loops
from benchmarks.workload import Metric, Workload, size

SECONDS = Metric("seconds", "s")


# -- the loop workloads (each returns its figure) -------------------------------

async def call_soon_burst(n):
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def nothing():
        pass

    def last():
        done.set_result(time.perf_counter())

    t0 = time.perf_counter()
    for _ in range(n - 1):
        loop.call_soon(nothing)
    loop.call_soon(last)
    return await done - t0


async def sleep0_steps(n):
    t0 = time.perf_counter()
    for _ in range(n):
        await asyncio.sleep(0)
    return (time.perf_counter() - t0) / n * 1e6


TIMER_SPREAD = 1000         # distinct delays, a µs apart: all within 1 ms


async def call_later_half_cancelled(n):
    """Scheduled and cancelled in one plain callback, not in this task's
    step: goloop preempts a step that runs past its time slice (10 ms), and
    the loop would then run timers already due before their cancel() --
    more callbacks, not the same work (goloop leaves plain callbacks alone)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    expected = n - n // 2       # the handles at even indices stay
    ran, t0 = 0, None

    def tick():
        nonlocal ran
        ran += 1
        if ran == expected:
            done.set_result(time.perf_counter())

    def schedule_then_cancel_half():
        nonlocal t0
        t0 = time.perf_counter()
        handles = [loop.call_later((i % TIMER_SPREAD) * 1e-6, tick) for i in range(n)]
        for handle in handles[1::2]:
            handle.cancel()

    loop.call_soon(schedule_then_cancel_half)
    seconds = await done - t0
    await asyncio.sleep(10 * TIMER_SPREAD * 1e-6)    # well past every deadline: a cancelled
    if ran != expected:                              # callback run late would show now
        raise RuntimeError(f"{ran} callbacks ran of {n} scheduled with every second one "
                           f"cancelled; {expected} should have")
    return seconds


IDLE_SOCKET_PAIRS = 500     # 1,000 sockets
FD_HEADROOM = 64            # the interpreter's own files, the loop's epoll and self-pipe


def make_room_for_fds(count):
    """Raise the soft limit on open files (to the hard one) if `count` more
    might not fit under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + FD_HEADROOM
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    if hard != resource.RLIM_INFINITY and hard < want:
        raise RuntimeError(f"{count} sockets need a limit of {want} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else hard, hard))


async def sleep0_steps_idle_sockets(n):
    """sleep0_steps(n) with IDLE_SOCKET_PAIRS socketpairs' sockets each
    watched by loop.add_reader(); no data is ever sent on them."""
    loop = asyncio.get_running_loop()
    make_room_for_fds(2 * IDLE_SOCKET_PAIRS)
    socks, watched, readable = [], [], []
    try:
        for _ in range(IDLE_SOCKET_PAIRS):
            socks += socket.socketpair()
        for sock in socks:
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), readable.append, sock.fileno())
            watched.append(sock.fileno())
        us_per_step = await sleep0_steps(n)
        if readable:
            raise RuntimeError(f"idle sockets reported readable: fds {sorted(set(readable))[:10]}")
        return us_per_step
    finally:
        for fd in watched:
            loop.remove_reader(fd)
        for sock in socks:
            sock.close()


async def gather_trivial(n):
    async def trivial():
        pass

    t0 = time.perf_counter()
    await asyncio.gather(*(trivial() for _ in range(n)))
    return time.perf_counter() - t0


async def queue_ping_pong(messages):
    pings, pongs = asyncio.Queue(), asyncio.Queue()
    round_trips = messages // 2

    async def ponger():
        for _ in range(round_trips):
            pongs.put_nowait(await pings.get())

    t0 = time.perf_counter()
    task = asyncio.create_task(ponger())
    for i in range(round_trips):
        pings.put_nowait(i)
        await pongs.get()
    await task
    return time.perf_counter() - t0


def on_loop(workload, metric, full, quick_size):
    """run(loop_name, quick) for the Workload: the coroutine function
    `workload(count)` on a new loop; its result is the metric."""
    def run(loop_name, quick):
        return {metric: loops.run(loop_name, workload(size(full, quick_size, quick)))}
    return run


# -- the goroutine switch ----------------------------------------------------------

def best_ns_per_op(loop_body, n, passes):
    """The fastest of `passes` timings of loop_body(n), per iteration."""
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter_ns()
        loop_body(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def resume_loop(resume):
    """A loop of n calls to `resume`: the round trip timed below."""
    def loop_body(n):
        for _ in range(n):
            resume()
    return loop_body


def goloop_round_trip():
    import goloop

    park = goloop.park

    def child():
        while True:
            park()

    g = goloop.Goroutine(child)
    g.resume()
    return resume_loop(g.resume)


def greenlet_round_trip():
    import greenlet

    parent = greenlet.getcurrent()

    def child():
        while True:
            parent.switch()

    gr = greenlet.greenlet(child)
    gr.switch()
    return resume_loop(gr.switch)


def c_switch_costs(n, passes):
    """The runtime's raw switch and resume+park in C (the cffi test module
    built with goloop); {} when it is not there."""
    try:
        from goloop import _runtime_cffi
    except ImportError:
        return {}
    lib = _runtime_cffi.lib
    return {
        "c_switch_ns": min(lib.gl_bench_raw_switch_ns(n) for _ in range(passes)),
        "c_resume_park_ns": min(lib.gl_bench_resume_park_ns(n) for _ in range(passes)),
    }


def goroutine_switch(loop_name, quick):
    n, passes = size(500_000, 100_000, quick), 3
    metrics = {"round_trip_ns": best_ns_per_op(goloop_round_trip(), n, passes)}
    try:
        metrics["greenlet_round_trip_ns"] = best_ns_per_op(greenlet_round_trip(), n, passes)
        metrics["vs_greenlet"] = metrics["round_trip_ns"] / metrics["greenlet_round_trip_ns"]
    except ImportError:                     # greenlet comes with .[bench]
        pass
    return metrics | c_switch_costs(10 * n, passes)


# -- await_ from plain functions ----------------------------------------------------

def await_costs(loop_name, quick):
    import goloop

    n, passes = size(100_000, 20_000, quick), 3
    sleep = asyncio.sleep
    await_ = goloop.await_

    async def plain(n):
        for _ in range(n):
            await sleep(0)

    def sync_side(n):
        for _ in range(n):
            await_(sleep(0))

    async def through_await_(n):
        sync_side(n)

    def timed(body):
        async def main():
            best = float("inf")
            for _ in range(passes):
                t0 = time.perf_counter_ns()
                await body(n)
                best = min(best, (time.perf_counter_ns() - t0) / n / 1000)
            return best
        return loops.run(loop_name, main())

    metrics = {"await_us": timed(through_await_), "await_plain_us": timed(plain)}
    metrics["await_vs_plain"] = metrics["await_us"] / metrics["await_plain_us"]
    try:
        import greenback
    except ImportError:
        return metrics

    def greenback_side(n):
        for _ in range(n):
            greenback.await_(sleep(0))

    async def through_greenback(n):
        await greenback.ensure_portal()
        greenback_side(n)

    metrics["greenback_us"] = timed(through_greenback)
    metrics["await_vs_greenback"] = metrics["await_us"] / metrics["greenback_us"]
    return metrics


WORKLOADS = [
    Workload("call_soon 1M", "scheduling", on_loop(call_soon_burst, "seconds", 1_000_000, 250_000),
             (SECONDS,)),
    Workload("timers 100k call_later, half cancelled", "scheduling",
             on_loop(call_later_half_cancelled, "seconds", 100_000, 10_000), (SECONDS,)),
    Workload("await sleep(0) step", "scheduling", on_loop(sleep0_steps, "us_per_step", 200_000, 50_000),
             (Metric("us_per_step", "µs"),)),
    Workload("sleep(0) step, 1,000 idle sockets", "scheduling",
             on_loop(sleep0_steps_idle_sockets, "us_per_step", 200_000, 50_000),
             (Metric("us_per_step", "µs"),)),
    Workload("gather 100k tasks", "scheduling", on_loop(gather_trivial, "seconds", 100_000, 25_000),
             (SECONDS,)),
    Workload("Queue ping-pong 200k msgs", "scheduling", on_loop(queue_ping_pong, "seconds", 200_000, 50_000),
             (SECONDS,)),
    Workload("goroutine switch round trip", "scheduling", goroutine_switch,
             (Metric("round_trip_ns", "ns"), Metric("greenlet_round_trip_ns", "ns"),
              Metric("vs_greenlet", "ratio"), Metric("c_switch_ns", "ns"), Metric("c_resume_park_ns", "ns")),
             loops=("goloop",),
             note="goroutine switch: loop-independent, measured once (under goloop); "
                  "greenlet's round trip and the raw C switch are in the details"),
    Workload("await_ vs await, 100k sleep(0)", "scheduling", await_costs,
             (Metric("await_vs_plain", "ratio"), Metric("await_us", "µs"),
              Metric("await_plain_us", "µs"), Metric("greenback_us", "µs"),
              Metric("await_vs_greenback", "ratio")),
             loops=("goloop",),
             note="await_ vs await: goloop.await_() from a plain function against a plain await "
                  "and greenback.await_(), on goloop"),
]
