"""python -m benchmarks: goloop against uvloop, asyncio and rloop, in one run.

    python -m benchmarks                    # everything, 5 repetitions (~15 min on 2 cores)
    python -m benchmarks --quick            # smaller sizes, 1 repetition (~2 min)
    python -m benchmarks -k fairness        # the workloads whose name, group or module matches
    python -m benchmarks --list             # what there is (EXTRA ones run only when -k selects them)

Run it from the project root, in an environment with goloop and the bench
extra (pip install .[bench]; `make bench` makes one in .venvs/bench).  Each
(workload, loop) runs in a fresh interpreter, loops alternating, and the
tables show medians, each loop's ratio to uvloop and goloop's to asyncio.
The results go to FILE.jsonl (every metric), FILE.md (the tables) and
FILE.png (the chart, with matplotlib).  The exit status is 1 when a run
failed (its cell says "error"; the summary says why).
"""
import argparse
import os
import sys
import time

from benchmarks import ROOT, loops
from benchmarks import chart, report, runner

TITLE = "# goloop benchmarks"
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
FULL_RESULTS = os.path.join(RESULTS_DIR, "latest.jsonl")      # what the README shows
PARTIAL_RESULTS = os.path.join(RESULTS_DIR, "scratch.jsonl")  # --quick, -k, --loops runs


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]) + "\n")
    ap.add_argument("--quick", action="store_true", help="smaller sizes and 1 repetition")
    ap.add_argument("--reps", type=int, help="fresh runs per (workload, loop) (default 5; --quick 1)")
    ap.add_argument("-k", dest="patterns", action="append", metavar="PATTERN",
                    help="only workloads whose name, group or module contains PATTERN (repeatable)")
    ap.add_argument("--loops", help=f"comma-separated, of {','.join(loops.LOOPS)} (default: those installed)")
    ap.add_argument("--results", metavar="FILE",
                    help="JSON lines here, tables beside it as .md (default benchmarks/results/latest.jsonl "
                         "for a full run, scratch.jsonl for --quick, -k or --loops)")
    ap.add_argument("--chart", metavar="FILE", help="the PNG chart (default: the results file as .png)")
    ap.add_argument("--timeout", type=float, default=180, help="seconds a run may take (default 180)")
    ap.add_argument("--list", action="store_true", help="list the workloads and exit")
    ap.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)   # tests: tiny workloads
    ap.add_argument("--child", nargs=2, metavar=("WORKLOAD", "LOOP"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def chosen_loops(ap_loops):
    """(loops to run, notes on the ones that cannot be)."""
    wanted = ap_loops.split(",") if ap_loops else loops.LOOPS
    unknown = [name for name in wanted if name not in loops.LOOPS]
    if unknown:
        raise SystemExit(f"unknown loop(s) {', '.join(unknown)}; of {', '.join(loops.LOOPS)}")
    installed = loops.available()
    missing = [f"{name} is not installed (pip install {name}, or pip install .[bench]): not measured"
               for name in wanted if name not in installed]
    return [name for name in loops.LOOPS if name in wanted and name in installed], missing


def results_path(args):
    if args.results:
        return args.results
    partial = args.quick or args.patterns or args.loops or args.scale != 1.0
    return PARTIAL_RESULTS if partial else FULL_RESULTS


def list_workloads(entries):
    for entry in entries:
        w = entry.workload
        extra = ("  [extra: only with -k]" if entry.extra
                 else "  [full runs only, or with -k]" if entry.full_only else "")
        print(f"{w.group:12} {entry.id}  ({w.headline.name}, {w.headline.unit}; loops {','.join(w.loops)}){extra}")


def run_printing(selected, loop_names, options, head):
    """Run the suite, printing each group's tables as it ends: (results, [(group, entries)], sections)."""
    print(f"{TITLE}\n\n{head}\n", flush=True)
    groups, sections = [], []

    def group_done(group, results):
        group_entries = [e for e in selected if e.workload.group == group]
        groups.append((group, group_entries))
        sections.append(report.group_section(group, group_entries, results, loop_names))
        print(sections[-1] + "\n", flush=True)

    return runner.run_suite(selected, loop_names, options, group_done), groups, sections


def write_outputs(args, info, markdown, groups, results):
    """The JSON lines, the markdown and the chart; lines saying where they went."""
    path = results_path(args)
    report.write_text(path, "".join(line + "\n" for line in report.json_lines(results)))
    md_path = os.path.splitext(path)[0] + ".md"
    report.write_text(md_path, markdown)
    title = f"{TITLE[2:]}: cost relative to uvloop (Python {info['python']}, {info['cores']} cores)"
    done = chart.render(args.chart or os.path.splitext(path)[0] + ".png", groups, results, title)
    return [done, f"results: {path}, {md_path}"]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        return runner.child_main(*args.child, args.quick)
    started = time.monotonic()
    entries, broken = runner.discover()
    if args.list:
        return list_workloads(entries)
    loop_names, notes = chosen_loops(args.loops)
    selected = [e for e in runner.select(entries, args.patterns, args.quick) if runner.loops_for(e, loop_names)]
    if not selected:
        raise SystemExit("no workload selected (python -m benchmarks --list shows them)")
    options = runner.Options(reps=args.reps or (1 if args.quick else 5), quick=args.quick,
                             scale=args.scale, timeout=args.timeout)
    info = report.machine()
    head = report.header(info, loop_names, options.reps, " ".join(["python -m benchmarks", *argv]))
    results, groups, sections = run_printing(selected, loop_names, options, head)
    failures = [f"FAILED {line}" for line in report.errors(results)]
    markdown = "\n\n".join([f"{TITLE}\n\n{head}", *sections, *failures]) + "\n"
    notes += write_outputs(args, info, markdown, groups, results)
    notes += [f"workload module {module} not loaded: {why}" for module, why in broken.items()]
    notes += failures + [f"total time: {time.monotonic() - started:.0f} s"]
    print("\n".join(notes))
    return 1 if failures or broken else 0


if __name__ == "__main__":
    sys.exit(main())
