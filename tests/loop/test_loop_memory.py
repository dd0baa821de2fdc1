"""The suite's memory workload at a small size: idle goloop tasks cost about
what asyncio's cost.  A memory check, not a timing one: RSS growth of 20,000
suspended tasks barely varies with machine load."""
import os

# scripts/sanitize.sh: under ASan, resident memory is largely ASan's own
# (redzones around every malloc'd block, the quarantine of freed ones, the
# shadow of the memory the instrumented extension touches), and goloop's
# process pays more of it than asyncio's: the ratio is not checked there.
SANITIZED = os.environ.get("GOLOOP_SANITIZED") == "1"


def test_idle_tasks_cost_about_what_asyncio_tasks_cost(run_benchmarks, tmp_path):
    r, rows = run_benchmarks(tmp_path / "memory.jsonl", "-k", "suspended tasks", "--reps", "1",
                             "--scale", "0.2", "--loops", "goloop,asyncio", timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    value = {(row["loop"], row["metric"]): row["value"] for row in rows}
    # 20,000 tasks are ~20 MB on either loop: a measurement, not noise
    assert value["asyncio", "rss_mb"] > 5, rows
    assert value["goloop", "rss_mb"] > 5, rows
    assert SANITIZED or value["goloop", "rss_mb"] / value["asyncio", "rss_mb"] < 1.5, rows
    # the tasks held no stacks while suspended: one worker's, not 20,000
    assert value["goloop", "stacks_in_use"] <= 4, rows
