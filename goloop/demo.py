"""python -m goloop.demo — what goloop does today.

1. A CPU-bound handler does not stall the loop: the same small server on
   asyncio, uvloop (when installed) and goloop, light requests timed while
   heavy ones compute.  goloop parks a task step that runs past its time
   slice and serves the others in between; the other loops cannot.
2. A plain function parks in the middle of a C call (a sorted() key
   function), which neither generators nor coroutines can do: the whole
   native stack is kept and resumed later.
3. Deep recursion on a goroutine raises RecursionError; it never crashes.
4. asyncio on goloop: every task step runs on a goroutine, and a task
   suspended at an await holds no stack.
5. The cost of a switch, against greenlet when it is installed.

`python -m goloop.demo --serve LOOP` is section 1's server, which runs in a
process of its own so that the clients timing it are never held up by it.
"""
import asyncio
import importlib.util
import math
import subprocess
import sys
import time

import goloop


def section(title):
    print(f"\n== {title}")


HEAVY_SECONDS = 0.5     # CPU time of a heavy request
TIMED_SECONDS = 3       # how long light requests are timed
LIGHT_PAUSE = 0.005     # between two light requests


def new_loop(name):
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return goloop.new_event_loop() if name == "goloop" else asyncio.new_event_loop()


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def rounds_for(seconds):
    """How many fib(20) calls take about `seconds` here."""
    t0 = time.perf_counter()
    for _ in range(50):
        fib(20)
    return max(1, round(50 * seconds / (time.perf_counter() - t0)))


def serve(loop_name):
    """Section 1's server: prints its port, then serves for a minute at most.
    A heavy request costs HEAVY_SECONDS of pure-Python CPU, a light one nothing."""
    rounds = rounds_for(HEAVY_SECONDS)

    async def handle(reader, writer):
        while line := await reader.readline():
            if line == b"heavy\n":
                for _ in range(rounds):
                    fib(20)
            writer.write(b"ok\n")
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await asyncio.sleep(60)

    with asyncio.Runner(loop_factory=lambda: new_loop(loop_name)) as runner:
        runner.run(main())


async def ask(streams, word):
    reader, writer = streams
    writer.write(word + b"\n")
    return await asyncio.wait_for(reader.readline(), 10)


async def keep_busy(port):
    streams = await asyncio.open_connection("127.0.0.1", port)
    while True:
        await ask(streams, b"heavy")


async def time_light_requests(port):
    """Light-request round trips (s) while two clients keep the server busy."""
    streams = await asyncio.open_connection("127.0.0.1", port)
    await ask(streams, b"light")      # connected and served before the load
    busy = [asyncio.create_task(keep_busy(port)) for _ in range(2)]
    await asyncio.sleep(0.2)          # the heavy requests are computing
    latencies = []
    end = time.perf_counter() + TIMED_SECONDS
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        await ask(streams, b"light")
        latencies.append(time.perf_counter() - t0)
        await asyncio.sleep(LIGHT_PAUSE)
    for task in busy:
        task.cancel()
    return latencies


def light_latencies(loop_name):
    """Start the server on `loop_name` in its own process and time it from
    here, on a plain asyncio loop that nothing else keeps busy."""
    safe_path = ["-P"] if sys.flags.safe_path else []
    argv = [sys.executable, *safe_path, "-m", "goloop.demo", "--serve", loop_name]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as server:
        try:
            return asyncio.run(time_light_requests(int(server.stdout.readline())))
        finally:
            server.kill()


def percentile(values, p):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def demo_preemption():
    section("a CPU-bound handler does not stall the loop")
    print(f"  A server computes {HEAVY_SECONDS} s of pure Python for each heavy request and answers light\n"
          f"  ones at once.  Two clients send it heavy requests back to back while a third\n"
          f"  sends a light request every {LIGHT_PAUSE * 1e3:.0f} ms for {TIMED_SECONDS} s and times each round trip:\n")
    print(f"  {'loop':8} {'light p50':>10} {'light p99':>10} {'light max':>10} {'light requests done':>20}")
    for name in ("asyncio", "uvloop", "goloop"):
        if name == "uvloop" and importlib.util.find_spec("uvloop") is None:
            print("  uvloop   (not installed: pip install uvloop to compare)")
            continue
        ms = [s * 1e3 for s in light_latencies(name)]
        print(f"  {name:8} {percentile(ms, 50):7.1f} ms {percentile(ms, 99):7.1f} ms {max(ms):7.1f} ms {len(ms):20}")
    print("\n  asyncio and uvloop run a task step to its end, so a light request waits for the\n"
          "  heavy computation in progress; goloop parks a step that has run past its time\n"
          "  slice (10 ms by default) and answers the light request in between.")


def demo_park_inside_c():
    section("a plain function parks inside sorted()")

    def key(word):
        # An ordinary function, called by C code (list.sort), hands each
        # word out and waits for its score: park() suspends the goroutine's
        # whole stack, sort's C frames included.
        return goloop.park(word)

    def sort_words():
        return sorted(["pear", "fig", "banana", "kiwi"], key=key)

    g = goloop.Goroutine(sort_words, name="sorter")
    request = g.resume()
    while g.status == "parked":
        frame = g.frame
        print(f"  parked in {frame.f_code.co_name}() line {frame.f_lineno}, asks for a score of {request!r}")
        request = g.resume(len(request))
    print(f"  sorted by length: {request}")


def demo_recursion():
    section("deep recursion on a goroutine")

    class Node:
        def __init__(self, depth):
            self.depth = depth

        def __repr__(self):   # C-mediated recursion: repr -> __repr__ -> repr
            return f"Node({Node(self.depth + 1)!r})"

    def recurse():
        try:
            repr(Node(0))
        except RecursionError as e:
            return f"RecursionError: {e}"

    size = goloop.get_default_stack_size()
    print(f"  stack of {size >> 20} MiB -> {goloop.Goroutine(recurse).resume()}")
    small = max(65536, goloop._goloop.MIN_STACK_SIZE)   # 96 KiB on a debug 3.14+
    print(f"  stack of {small >> 10} KiB -> {goloop.Goroutine(recurse, stack_size=small).resume()}")


def demo_asyncio():
    section("asyncio on goloop: 10,000 tasks")

    async def worker(i, gate):
        on_goroutine = goloop.current() is not None
        await gate.wait()          # suspended here: no stack held
        return on_goroutine

    async def main():
        gate = asyncio.Event()
        tasks = [asyncio.create_task(worker(i, gate)) for i in range(10_000)]
        await asyncio.sleep(0.01)
        in_use = goloop.stats()["stacks_in_use"]
        gate.set()
        results = await asyncio.gather(*tasks)
        return type(asyncio.get_running_loop()).__name__, sum(results), in_use

    loop_name, on_goroutines, in_use = goloop.run(main())
    print(f"  loop: {loop_name}; steps that ran on a goroutine: {on_goroutines} of 10000")
    print(f"  stacks in use while all 10,000 tasks were suspended: {in_use}")


def best_round_trip_ns(switch, n=200_000, reps=5):
    """Best of `reps` runs of n calls to switch(), in ns per call."""
    switch()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            switch()
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def demo_switch_cost():
    section("switch cost (best of 5 runs of 200,000 round trips)")

    def child():
        while True:
            goloop.park()

    best = best_round_trip_ns(goloop.Goroutine(child).resume)
    print(f"  goloop   resume+park round trip: {best:6.0f} ns")
    try:
        import greenlet
    except ImportError:
        print("  (pip install greenlet to compare with it)")
        return
    parent = greenlet.getcurrent()

    def gchild():
        while True:
            parent.switch()

    gbest = best_round_trip_ns(greenlet.greenlet(gchild).switch)
    print(f"  greenlet switch round trip:       {gbest:6.0f} ns  (goloop/greenlet = {best / gbest:.2f})")


def main():
    if sys.argv[1:2] == ["--serve"]:
        return serve(sys.argv[2])
    print(f"goloop {goloop.__version__} on Python {sys.version.split()[0]} ({goloop._goloop.ARCH})")
    demo_preemption()
    demo_park_inside_c()
    demo_recursion()
    demo_asyncio()
    demo_switch_cost()
    s = goloop.stats()
    print(f"\n  stacks mapped {s['stacks_mapped']}, reused {s['stacks_reused']}, in use {s['stacks_in_use']}")


if __name__ == "__main__":
    main()
