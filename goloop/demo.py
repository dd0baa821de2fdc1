"""python -m goloop.demo — what goloop's goroutine runtime does today.

1. A plain function parks in the middle of a C call (a sorted() key
   function), which neither generators nor coroutines can do: the whole
   native stack is kept and resumed later.
2. Deep recursion on a goroutine raises RecursionError; it never crashes.
3. asyncio on goloop: every task step runs on a goroutine, and a task
   suspended at an await holds no stack.
4. The cost of a switch, against greenlet when it is installed.
"""
import asyncio
import sys
import time

import goloop


def section(title):
    print(f"\n== {title}")


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
    print(f"  stack of 64 KiB -> {goloop.Goroutine(recurse, stack_size=65536).resume()}")


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
    print(f"goloop {goloop.__version__} on Python {sys.version.split()[0]} ({goloop._goloop.ARCH})")
    demo_park_inside_c()
    demo_recursion()
    demo_asyncio()
    demo_switch_cost()
    s = goloop.stats()
    print(f"\n  stacks mapped {s['stacks_mapped']}, reused {s['stacks_reused']}, in use {s['stacks_in_use']}")


if __name__ == "__main__":
    main()
