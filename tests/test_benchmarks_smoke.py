"""benchmarks/preemption.py runs end to end: every workload on every loop
installed, a table each, the target lines and the JSON lines (durations
scaled down to a few seconds in all; the figures are not checked)."""
import json
import os

BENCHMARK = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "preemption.py")
WORKLOADS = ("fairness", "overhead", "overhead+ticker", "idle", "idle+timer")


def test_preemption_benchmark_runs(run_python, tmp_path):
    out_file = tmp_path / "preemption.jsonl"
    r = run_python(
        f"import runpy; runpy.run_path({os.path.abspath(BENCHMARK)!r}, run_name='__main__')",
        "--scale", "0.05", "--reps", "1", "--json", str(out_file),
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for workload in WORKLOADS:
        assert f"### {workload} (median of 1)" in r.stdout
    assert r.stdout.count("\ntarget ") == 3, r.stdout
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    seen = {(row["workload"], row["loop"]) for row in rows}
    assert {(w, "goloop") for w in WORKLOADS} <= seen
    assert {(w, "goloop-nopreempt") for w in WORKLOADS if w != "fairness"} <= seen
    goloop_fairness = {row["metric"] for row in rows if row["workload"] == "fairness" and row["loop"] == "goloop"}
    assert {"light_p99", "light_done", "preemptions", "longest_step"} <= goloop_fairness
