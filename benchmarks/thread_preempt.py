"""Preemption off the main thread: what it costs and how soon it lands,
against the main thread's mechanism (SIGURG there, a pending call on any
other thread: csrc/cpython/preempt.c).

    python -m benchmarks.thread_preempt [--repeat N] [--steps N] [--seconds S]

For a loop on the main thread and for one on a worker thread (the main
thread waiting in join()), each in a fresh process:

  step cost   µs per `await asyncio.sleep(0)` step, preempt=True against
              preempt=False (what watching the steps costs: the marks sysmon
              reads, the clock reads, sysmon's wake-ups)
  overrun     how far past its 10 ms slice a CPU-bound step runs before it
              is parked: the hog notes where its bytecode was interrupted
              (a gap of 150 us or more in its own clock readings; a task
              beside it computes 200 us every 2 ms, so a park leaves one)
              and the length of each stretch between two such gaps;
              overrun = stretch - slice, p50 and p99
              (sysmon's look, the request's delivery — a signal and the
              Python-level handler, or a pending call — and the park)

Measured on the project's 2-core VM (other jobs running; --repeat 5-7,
--seconds 1), ratios thread/main: overrun p50 0.79-0.85 (about 75 us
against 90 us: a pending call skips the signal and the Python-level
handler's dispatch), p99 0.5-0.8; preemption's own cost (step time with
preemption on / off) 1.00-1.04 on 3.12, 3.14 and 3.15, 1.17 on 3.13 (the
on/off ratios themselves are 0.87-1.01, i.e. within the noise: watching
steps costs nothing measurable in either place).  On 3.11 (a trace function
installed by goloop's tracer thread instead of a pending call), two runs
(--repeat 3 and 5): overrun p50 55 and 88 us against 46 and 88 us on the
main thread, p99 2.5 and 0.5 ms against 1.0 and 3.0 ms.

Prints one table and the ratios thread/main.  Run on an otherwise idle
machine; numbers are medians over --repeat runs, the two placements
interleaved.
"""
import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import asyncio, json, sys, threading, time
import goloop

perf = time.perf_counter
SLICE = 0.010

async def step_cost(n):
    t = perf()
    for _ in range(n):
        await asyncio.sleep(0)
    return (perf() - t) / n * 1e6

async def overrun(seconds):
    stretches = []
    stop = False

    async def other():   # 200 us of work every 2 ms: a park's gap in the
        while not stop:   # hog's readings is at least that long
            end = perf() + 200e-6
            while perf() < end:
                pass
            await asyncio.sleep(0.002)

    async def hog():
        start = last = perf()
        end = start + seconds
        while last < end:
            now = perf()
            if now - last > 150e-6:     # parked between two readings
                stretches.append(last - start)
                start = now
            last = now

    o = asyncio.create_task(other())
    await asyncio.sleep(0)
    before = goloop.stats()["preemptions"]
    await hog()
    made = goloop.stats()["preemptions"] - before
    stop = True
    await o
    over = sorted((s - SLICE) * 1e6 for s in stretches[1:])
    return {"p50_us": over[len(over) // 2], "p99_us": over[int(len(over) * 0.99)],
            "stretches": len(over), "preemptions": made}

what, where, preempt, arg = sys.argv[1], sys.argv[2], sys.argv[3] == "1", float(sys.argv[4])
coro = step_cost(int(arg)) if what == "cost" else overrun(arg)
out = {}
def run():
    out["r"] = goloop.run(coro, preempt=preempt, time_slice=SLICE)
if where == "main":
    run()
else:
    t = threading.Thread(target=run)
    t.start()
    t.join()
print(json.dumps(out["r"]))
"""


def child(*args):
    r = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args(argv)
    # Interleaved (main, thread, main, ...), so that a load that comes and
    # goes weighs on both alike; medians over the repeats.
    raw = {where: {"on": [], "off": [], "runs": []} for where in ("main", "thread")}
    for _ in range(a.repeat):
        for where in ("main", "thread"):
            raw[where]["on"].append(child("cost", where, 1, a.steps))
            raw[where]["off"].append(child("cost", where, 0, a.steps))
            raw[where]["runs"].append(child("overrun", where, 1, a.seconds))
    res = {}
    for where, r in raw.items():
        cost_on, cost_off, runs = statistics.median(r["on"]), statistics.median(r["off"]), r["runs"]
        res[where] = {
            "us_per_step_on": cost_on, "us_per_step_off": cost_off, "cost_ratio": cost_on / cost_off,
            "overrun_p50_us": statistics.median(x["p50_us"] for x in runs),
            "overrun_p99_us": statistics.median(x["p99_us"] for x in runs),
            "preemptions": statistics.median(x["preemptions"] for x in runs),
        }
    print(f"{'':8} {'step on/off':>12} {'overrun p50':>12} {'overrun p99':>12} {'preemptions':>12}")
    for where, r in res.items():
        print(f"{where:8} {r['cost_ratio']:12.3f} {r['overrun_p50_us']:10.0f}us {r['overrun_p99_us']:10.0f}us "
              f"{r['preemptions']:12.0f}")
    m, t = res["main"], res["thread"]
    print(f"thread/main: step cost (preempt on) {t['us_per_step_on'] / m['us_per_step_on']:.3f}, "
          f"preemption overhead {t['cost_ratio'] / m['cost_ratio']:.3f}, "
          f"overrun p50 {t['overrun_p50_us'] / m['overrun_p50_us']:.2f}, "
          f"p99 {t['overrun_p99_us'] / m['overrun_p99_us']:.2f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
