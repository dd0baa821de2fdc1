#!/usr/bin/env python3
"""Run CPython's own test.test_asyncio against goloop and/or the stock loop.

    python tests/conformance/run_conformance.py                 # both, compared
    python tests/conformance/run_conformance.py --loop goloop   # one loop, counts only
    python tests/conformance/run_conformance.py -k test_tasks -k Goloop
    python tests/conformance/run_conformance.py --python .venvs/py3.11/bin/python \\
                                                --python .venvs/py3.13/bin/python

Each --python (default: this interpreter) must have goloop importable (a venv
with goloop installed, or PYTHONPATH pointing at a source tree with goloop
built in place) and CPython's test package.  Prints goloop's and stock's
passed/failed/skipped counts per version and, with both loops, the tests that
pass on stock but not on goloop.  Exit status 1 when the comparison fails
(what the pytest test, test_cpython_asyncio_conformance.py, asserts), 2 when
a run did not finish.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpython_conformance as cc  # noqa: E402  (it puts tests/ on sys.path)
import suite_runner as sr  # noqa: E402


def main(argv=None):
    ap = sr.argument_parser(__doc__)
    ap.add_argument("--loop", choices=("goloop", "stock", "both"), default="both")
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="only tests whose id contains / matches PATTERN (repeatable)")
    ap.add_argument("--python", action="append", default=[],
                    help="interpreter to run with (repeatable; default this one)")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="child interpreters at once")
    ap.add_argument("--timeout", type=float, default=90.0,
                    help="seconds one test may take (default 90)")
    ap.add_argument("--deadline", type=float, default=900.0,
                    help="seconds one loop's whole run may take (default 900)")
    ap.add_argument("--workdir", help="keep the per-test JSON results here")
    ap.add_argument("--details", action="store_true",
                    help="print the goloop tracebacks of the differences")
    args = ap.parse_args(argv)

    loops = ("goloop", "stock") if args.loop == "both" else (args.loop,)
    status = 0
    summaries = []
    for python in args.python or [sys.executable]:
        why_not = cc.has_test_asyncio(python)
        if why_not:
            print(f"SKIPPED: {why_not}")
            status = max(status, 2)
            continue
        workdir = None
        if args.workdir:
            workdir = os.path.join(args.workdir, os.path.basename(os.path.dirname(
                os.path.dirname(os.path.abspath(python)))) or "python")
            os.makedirs(workdir, exist_ok=True)
        version, runs, comparison = cc.run_conformance(
            python=python, patterns=args.patterns, jobs=args.jobs,
            per_test_timeout=args.timeout, deadline_seconds=args.deadline,
            workdir=workdir, loops=loops)
        if comparison is not None:
            print(comparison.report())
            if args.details and comparison.details():
                print("\nTracebacks:\n" + comparison.details())
            summaries.append(comparison.table())
            if not comparison.ok:
                status = max(status, 2 if comparison.problems else 1)
        else:
            for loop, run in runs.items():
                c = run.counts()
                line = (f"CPython {version} {loop}: {c['passed']} passed, {c['failed']} failed, "
                        f"{c['skipped']} skipped, {c['xfail']} expected failures, "
                        f"{len(run.records)} tests, {run.seconds:.0f} s")
                if loop == "goloop":
                    line += (f"; {run.counters.get('goloop_loops', '?')} goloop loops, "
                             f"{run.tests_on_goloop()} tests on one, task steps on goroutines "
                             f"{run.counters.get('goroutine_steps')}")
                print(line)
                summaries.append(line)
                failed = [(t, r) for t, r in sorted(run.records.items())
                          if r["outcome"] in cc.FAILED]
                for t, r in failed:
                    print(f"  {r['outcome']}: {t}: {sr.summary_line(r.get('detail'))}")
                for n in run.notes:
                    print(f"  note: {n}")
                if not run.complete:
                    status = max(status, 2)
        print()
    if len(summaries) > 1:
        print("\n\n".join(summaries))
    return status


if __name__ == "__main__":
    sys.exit(main())
