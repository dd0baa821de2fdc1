#!/usr/bin/env python3
"""Run aiohttp's own test suite (pinned release) on goloop and/or stock asyncio.

    python tests/aiohttp_suite/run_aiohttp_suite.py                  # both, compared
    python tests/aiohttp_suite/run_aiohttp_suite.py --loop goloop    # one loop, counts only
    python tests/aiohttp_suite/run_aiohttp_suite.py tests/test_web_functional.py -k websocket
    python tests/aiohttp_suite/run_aiohttp_suite.py --time-slice 1ms --workdir /tmp/aio
    python tests/aiohttp_suite/run_aiohttp_suite.py --prepare        # only download/install

--python (default: this interpreter; any CPython goloop supports, a venv's
too) picks the version: the suite runs in .venvs/aiohttp-suite-py3.X, made
on first use (aiohttp's wheel, its test tools, goloop built from this tree).
Positional arguments are paths or node ids inside aiohttp's sdist (tests/...).
Prints both runs' counts and every difference; exit status 1 when the
comparison fails (what test_aiohttp_suite.py asserts), 2 when a run did not
finish or crashed.  See aiohttp_suite.py for the design.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aiohttp_suite as suite  # noqa: E402  (it puts tests/ on sys.path)
import suite_runner as sr  # noqa: E402


def main(argv=None):
    ap = sr.argument_parser(__doc__)
    ap.add_argument("paths", nargs="*", help="files or node ids under tests/ of the sdist")
    ap.add_argument("--loop", choices=("goloop", "stock", "both"), default="both")
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="pytest -k expression (repeatable)")
    ap.add_argument("--python", help="interpreter whose version to run (default this one)")
    ap.add_argument("--jobs", "-j", type=int, default=2,
                    help="pytest-xdist workers in all (default 2: one per loop)")
    ap.add_argument("--one-after-the-other", action="store_true",
                    help="run the loops in turn, each with all the workers")
    ap.add_argument("--time-slice", help="GOLOOP_TIME_SLICE for the goloop run "
                                         "(default: goloop's, 10 ms)")
    ap.add_argument("--deadline", type=float, default=4500.0,
                    help="seconds one loop's run may take (default 4500)")
    ap.add_argument("--no-rerun", action="store_true",
                    help="do not run unexpected differences again")
    ap.add_argument("--workdir", help="keep the JSON results and logs here")
    ap.add_argument("--details", action="store_true",
                    help="print the tracebacks of the unexpected differences")
    ap.add_argument("--prepare", action="store_true",
                    help="only fetch the sdist and make the virtualenv")
    args = ap.parse_args(argv)

    if args.prepare:
        version, vpy, tree = suite.prepare(args.python)
        print(f"CPython {version}: {vpy}\naiohttp {suite.AIOHTTP_VERSION} tests: {tree}")
        return 0
    loops = ("goloop", "stock") if args.loop == "both" else (args.loop,)
    version, runs, comparison, workdir = suite.run_suite(
        python=args.python, loops=loops, jobs=args.jobs, patterns=args.patterns,
        paths=args.paths, deadline_seconds=args.deadline, time_slice=args.time_slice,
        workdir=args.workdir, together=not args.one_after_the_other, rerun=not args.no_rerun)
    if comparison is not None:
        print(comparison.report())
        if args.details and comparison.details():
            print("\nTracebacks:\n" + comparison.details())
        if os.path.isdir(workdir):
            print(f"(work files in {workdir})")
        if comparison.ok:
            return 0
        return 2 if comparison.problems else 1
    return print_single(version, runs)


def print_single(version, runs):
    status = 0
    for loop, run in runs.items():
        c = run.counts()
        print(f"CPython {version} {loop}: " + ", ".join(f"{v} {k}" for k, v in c.items() if v)
              + f"; {len(run.records)} tests, {run.seconds:.0f} s"
              + (f"; {run.counters.get('goloop_loops')} goloop loops, "
                 f"{(run.counters.get('goloop_stats') or {}).get('preemptions')} preemptions"
                 if loop == "goloop" else ""))
        for tid, r in sorted(run.records.items()):
            if r["outcome"] in ("fail", "error", "xpass", "crash"):
                print(f"  {r['outcome']}: {tid}: {suite.first_error(r.get('detail'))}")
        for n in run.notes:
            print(f"  note: {n}")
        if not run.complete or run.crashes():
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
