"""Scheduling cost: goloop against stock asyncio and uvloop, in one run.

    python benchmarks/scheduling.py [--reps 5]

Workloads: `await asyncio.sleep(0)` steps (200,000; µs per step) and gather of
100,000 trivial tasks (seconds).  Each (workload, loop) runs in a fresh
interpreter, loops alternating, and each loop's median over the repetitions
is reported with its ratio to uvloop and to asyncio (uvloop is skipped when
not installed: pip install .[bench]).  Absolute times on a shared machine
mean little; compare within one run.
"""
import argparse
import asyncio
import importlib.util
import json
import statistics
import subprocess
import sys
import time

WORKLOADS = {"sleep0": "us/step", "gather": "s"}


def new_loop_factory(name):
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if name == "goloop":
        import goloop

        return goloop.new_event_loop
    return asyncio.new_event_loop


async def sleep0(n=200_000):
    t0 = time.perf_counter()
    for _ in range(n):
        await asyncio.sleep(0)
    return (time.perf_counter() - t0) / n * 1e6


async def gather(n=100_000):
    async def trivial():
        pass

    t0 = time.perf_counter()
    await asyncio.gather(*(trivial() for _ in range(n)))
    return time.perf_counter() - t0


def child(loop_name, workload):
    coro = {"sleep0": sleep0, "gather": gather}[workload]()
    with asyncio.Runner(loop_factory=new_loop_factory(loop_name)) as runner:
        print(runner.run(coro))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(*args.child)
    loops = ["asyncio", "goloop"] + (["uvloop"] if importlib.util.find_spec("uvloop") else [])
    results = []
    for workload, unit in WORKLOADS.items():
        samples = {name: [] for name in loops}
        for _ in range(args.reps):
            for name in loops:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", name, workload],
                    capture_output=True, text=True, check=True,
                )
                samples[name].append(float(out.stdout))
        med = {name: statistics.median(v) for name, v in samples.items()}
        for name in loops:
            results.append({"workload": workload, "loop": name, "value": round(med[name], 4), "unit": unit})
        ratios = "  ".join(
            f"goloop/{ref} {med['goloop'] / med[ref]:.2f}" for ref in ("uvloop", "asyncio") if ref in med
        )
        cells = "  ".join(f"{name} {med[name]:.3f}" for name in loops)
        print(f"{workload:7} ({unit}): {cells}   {ratios}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
