"""Memory of idle tasks: goloop vs stock asyncio (vs uvloop, if installed).

    python benchmarks/memory.py                 # 100,000 tasks, 3 repetitions
    python benchmarks/memory.py --tasks 20000 --reps 1

N tasks are created and each runs to an await on an asyncio.Event that is
set only after the measurement, so all N are suspended at once.  What is
measured is the growth of the resident set (RSS, from /proc/self/statm)
between a baseline -- taken after the interpreter started, imported
everything and created the loop -- and the moment all N tasks are
suspended.  Every measurement runs in a fresh interpreter, the loops
interleaved, and each loop's median is reported.

goloop runs every task step on a goroutine, but a task suspended at an await
holds no stack (design.md 3), so its tasks should cost what asyncio's cost:
the target is goloop_vs_asyncio <= 1.2.

Output: a markdown table, then one JSON line
    {"goloop_rss_mb": ..., "asyncio_rss_mb": ..., "uvloop_rss_mb": ..., "goloop_vs_asyncio": ...}
(uvloop_rss_mb is null when uvloop is not installed).  --max-ratio R makes
the exit status 1 when goloop_vs_asyncio exceeds R.
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys

LOOPS = ("goloop", "asyncio", "uvloop")
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def child(kind, n):
    """Measure one loop kind in this (fresh) interpreter; print JSON."""
    import asyncio
    import gc

    if kind == "goloop":
        import goloop

        loop = goloop.new_event_loop()
    elif kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    elif kind == "asyncio":
        loop = asyncio.SelectorEventLoop()
    else:
        raise SystemExit(f"unknown loop {kind!r}")
    asyncio.set_event_loop(loop)

    async def idle(event, counter):
        counter[0] += 1
        await event.wait()

    async def main():
        event = asyncio.Event()
        counter = [0]
        tasks = [asyncio.ensure_future(idle(event, counter)) for _ in range(n)]
        while counter[0] < n:
            await asyncio.sleep(0)
        gc.collect()
        grown = rss_bytes() - baseline
        extra = {}
        if kind == "goloop":
            extra = {k: goloop.stats()[k] for k in ("stacks_in_use", "goroutines_live")}
        event.set()
        await asyncio.gather(*tasks)
        return grown, extra

    # warm up what a first run allocates once (code objects, the first
    # worker goroutine, free lists) so the baseline does not count it
    loop.run_until_complete(asyncio.sleep(0))
    gc.collect()
    baseline = rss_bytes()
    grown, extra = loop.run_until_complete(main())
    loop.close()
    print(json.dumps({"loop": kind, "tasks": n, "rss_bytes": grown, **extra}))


def measure(kind, n):
    r = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", kind, "--tasks", str(n)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if r.returncode != 0:
        raise SystemExit(f"{kind} child failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def available(kind):
    return kind != "uvloop" or importlib.util.find_spec("uvloop") is not None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=100_000, help="suspended tasks (default 100000)")
    ap.add_argument("--reps", type=int, default=3, help="fresh processes per loop (default 3)")
    ap.add_argument("--loops", default=",".join(LOOPS), help="comma-separated, of: " + ", ".join(LOOPS))
    ap.add_argument("--max-ratio", type=float, default=None, help="exit 1 if goloop/asyncio exceeds this")
    ap.add_argument("--child", choices=LOOPS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.tasks)
        return 0

    kinds = [k for k in args.loops.split(",") if k]
    for k in kinds:
        if k not in LOOPS:
            ap.error(f"unknown loop {k!r}")
    runs = {k: [] for k in kinds if available(k)}
    extras = {}
    for _ in range(args.reps):
        for k in runs:                      # interleaved: drift hits all alike
            m = measure(k, args.tasks)
            runs[k].append(m["rss_bytes"])
            if k == "goloop":
                extras = {key: m[key] for key in ("stacks_in_use", "goroutines_live")}

    mb = {k: statistics.median(v) / 2**20 for k, v in runs.items()}
    print(f"{args.tasks:,} tasks suspended at an await, RSS growth, median of {args.reps} fresh processes "
          f"(Python {sys.version.split()[0]})\n")
    print("| loop | RSS growth (MB) | min | max | per task (bytes) | vs asyncio |")
    print("|---|---|---|---|---|---|")
    for k, v in runs.items():
        ratio = f"{mb[k] / mb['asyncio']:.2f}" if "asyncio" in mb and mb["asyncio"] > 0 else "-"
        print(f"| {k} | {mb[k]:.1f} | {min(v) / 2**20:.1f} | {max(v) / 2**20:.1f} | "
              f"{statistics.median(v) / args.tasks:.0f} | {ratio} |")
    if "uvloop" in kinds and "uvloop" not in runs:
        print("| uvloop | not installed | | | | |")
    if extras:
        print(f"\ngoloop while suspended: stacks_in_use={extras['stacks_in_use']}, "
              f"goroutines_live={extras['goroutines_live']}")
    ratio = mb["goloop"] / mb["asyncio"] if "goloop" in mb and mb.get("asyncio") else None
    print()
    print(json.dumps({
        "goloop_rss_mb": round(mb["goloop"], 2) if "goloop" in mb else None,
        "asyncio_rss_mb": round(mb["asyncio"], 2) if "asyncio" in mb else None,
        "uvloop_rss_mb": round(mb["uvloop"], 2) if "uvloop" in mb else None,
        "goloop_vs_asyncio": round(ratio, 3) if ratio is not None else None,
        "goloop_stacks_in_use": extras.get("stacks_in_use"),
        "tasks": args.tasks,
        "reps": args.reps,
    }))
    if args.max_ratio is not None and ratio is not None and ratio > args.max_ratio:
        print(f"goloop_vs_asyncio {ratio:.3f} exceeds {args.max_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
