"""python -m benchmarks runs end to end on a few cheap workloads of each
kind -- a loop workload, a loop-independent one, one with a server process
of its own, a memory one -- on asyncio and goloop, scaled down to seconds in
all: the tables, the notes and the JSON lines are there (the figures are not
checked)."""

WORKLOADS = ("call_soon 1M", "goroutine switch round trip", "fairness: light p99 under heavy load",
             "100k suspended tasks", "timers 100k call_later, half cancelled",
             "sleep(0) step, 1,000 idle sockets")


def test_runner_quick_run(run_benchmarks, tmp_path):
    results = tmp_path / "run.jsonl"
    r, rows = run_benchmarks(results, "--quick", "--scale", "0.05", "--loops", "asyncio,goloop",
                             "-k", "call_soon", "-k", "switch", "-k", "fairness", "-k", "suspended",
                             "-k", "timers", "-k", "idle sockets", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    for group in ("scheduling", "preemption", "memory"):
        assert f"\n## {group}\n" in r.stdout
    assert "| workload | unit | asyncio | goloop | goloop/asyncio |" in r.stdout
    assert "error" not in r.stdout
    for workload in WORKLOADS:
        assert f"| {workload} |" in r.stdout
    assert "total time:" in r.stdout
    assert (tmp_path / "run.md").read_text().startswith("# goloop benchmarks")
    seen = {(row["workload"], row["loop"]) for row in rows}
    assert {(w, "goloop") for w in WORKLOADS} <= seen
    assert {(w, "asyncio") for w in WORKLOADS if w != "goroutine switch round trip"} <= seen
    assert all(row["reps"] == 1 and isinstance(row["value"], float) for row in rows)
    fairness = {row["metric"] for row in rows if row["workload"] == WORKLOADS[2] and row["loop"] == "goloop"}
    assert {"light_p99", "light_done", "preemptions", "longest_step"} <= fairness


def test_runner_reports_a_failing_run(run_benchmarks, tmp_path):
    """A run that fails is an "error" cell and a FAILED line, and the exit
    status is 1; the runner itself does not crash.  (A timeout of 0 s fails
    every run.)"""
    r, rows = run_benchmarks(tmp_path / "run.jsonl", "--quick", "--loops", "asyncio",
                             "-k", "call_soon", "--timeout", "0", timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "| call_soon 1M | s | error |" in r.stdout
    assert "FAILED call_soon 1M on asyncio: timed out after 0 s" in r.stdout
    assert rows == []


def test_instruction_counting_program_runs_every_workload_on_every_goloop_kind(run_python):
    """benchmarks/instructions.py runs its program under valgrind; here it
    runs bare, scaled down, on stock asyncio and the three goloop kinds, so a
    workload that broke shows without valgrind installed."""
    import os
    import runpy

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tool = runpy.run_path(os.path.join(root, "benchmarks", "instructions.py"))
    for kind in ("asyncio", "goloop", "goloop-nopreempt", "goloop-nogo"):
        for work in tool["WORKLOADS"]:
            r = run_python(tool["PROGRAM"], kind, work, "200", timeout=60)
            assert r.returncode == 0, (kind, work, r.stderr[-2000:])
