"""Which clock should a time slice count: wall time or the loop thread's CPU
time?  (GOLOOP_SLICE_CLOCK=wall|cpu; goloop/_preempt.py.)

    python -m benchmarks.slice_clock [--burners N] [--seconds S]

Runs, for each clock, on a machine made busy by N CPU-burning processes
(default: one per core, so the loop's thread is descheduled now and then):

  short steps   tasks whose steps compute 2 ms (a fifth of the 10 ms slice)
                and await; every preemption of them is one the load caused
  light p99     a task that sleeps 1 ms and measures how late it wakes,
                beside two tasks computing 200 ms per step: the latency
                preemption exists for
  sleep(0) step the cost of a step in each mode (the cpu clock reads the
                thread's CPU time at every step: a system call)

and prints one table.  Each measurement runs in a fresh process.
"""
import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time

CHILD = r"""
import asyncio, json, os, sys, time
import goloop

def burn(s):
    end = time.thread_time() + s
    while time.thread_time() < end:
        pass

async def short_steps(seconds):
    async def worker():
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            burn(0.002)
            n += 1
            await asyncio.sleep(0)
        return n
    before = goloop.stats()["preemptions"]
    steps = sum(await asyncio.gather(*(worker() for _ in range(4))))
    return {"steps": steps, "preemptions": goloop.stats()["preemptions"] - before}

async def light_latency(seconds):
    async def hog(end):
        while time.monotonic() < end:
            burn(0.2)
            await asyncio.sleep(0)
    end = time.monotonic() + seconds
    hogs = [asyncio.create_task(hog(end)) for _ in range(2)]
    late = []
    while time.monotonic() < end:
        t = time.monotonic()
        await asyncio.sleep(0.001)
        late.append(time.monotonic() - t - 0.001)
    await asyncio.gather(*hogs)
    late.sort()
    return {"p50_ms": late[len(late) // 2] * 1e3, "p99_ms": late[int(len(late) * 0.99)] * 1e3}

async def step_cost(n):
    t = time.perf_counter()
    for _ in range(n):
        await asyncio.sleep(0)
    return {"us_per_step": (time.perf_counter() - t) / n * 1e6}

what, arg = sys.argv[1], float(sys.argv[2])
fn = {"short": short_steps, "light": light_latency, "cost": step_cost}[what]
print(json.dumps(goloop.run(fn(int(arg) if what == "cost" else arg))))
"""


def _burner():
    while True:
        pass


def measure(clock, what, arg):
    env = dict(os.environ, GOLOOP_SLICE_CLOCK=clock)
    out = subprocess.run([sys.executable, "-c", CHILD, what, str(arg)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--burners", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    rows = {}
    for clock in ("wall", "cpu"):
        rows[clock] = {"cost": measure(clock, "cost", 200_000)}
    procs = [multiprocessing.Process(target=_burner, daemon=True) for _ in range(args.burners)]
    for p in procs:
        p.start()
    try:
        time.sleep(0.5)
        for clock in ("wall", "cpu"):
            rows[clock]["short"] = measure(clock, "short", args.seconds)
            rows[clock]["light"] = measure(clock, "light", args.seconds)
    finally:
        for p in procs:
            p.terminate()
    print(f"slice clock, {args.burners} CPU burners beside the loop, {os.cpu_count()} cores")
    print(f"{'clock':6} {'short steps':>12} {'preempted':>10} {'share':>7} "
          f"{'light p50':>10} {'light p99':>10} {'sleep(0) step':>14}")
    for clock, r in rows.items():
        s = r["short"]
        print(f"{clock:6} {s['steps']:12d} {s['preemptions']:10d} {s['preemptions'] / max(s['steps'], 1):7.1%} "
              f"{r['light']['p50_ms']:8.2f}ms {r['light']['p99_ms']:8.2f}ms {r['cost']['us_per_step']:11.2f} us")


if __name__ == "__main__":
    main()
