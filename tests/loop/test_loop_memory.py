"""benchmarks/memory.py at a small size: idle goloop tasks cost about what
asyncio's cost.  A memory check, not a timing one: RSS growth of 20,000
suspended tasks barely varies with machine load."""
import json
from pathlib import Path

MEMORY_PY = Path(__file__).resolve().parents[2] / "benchmarks" / "memory.py"


def test_idle_tasks_cost_about_what_asyncio_tasks_cost(run_python):
    assert MEMORY_PY.is_file(), MEMORY_PY
    code = f"""
        import runpy, sys
        sys.argv = [{str(MEMORY_PY)!r}, "--tasks", "20000", "--reps", "1", "--loops", "goloop,asyncio"]
        runpy.run_path(sys.argv[0], run_name="__main__")
    """
    r = run_python(code, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert "| goloop |" in r.stdout and "| asyncio |" in r.stdout, r.stdout
    assert result["tasks"] == 20000
    # 20,000 tasks are ~20 MB on either loop: a measurement, not noise
    assert result["asyncio_rss_mb"] > 5, result
    assert result["goloop_rss_mb"] > 5, result
    assert result["goloop_vs_asyncio"] < 1.5, result
    # the tasks held no stacks while suspended: one worker's, not 20,000
    assert result["goloop_stacks_in_use"] <= 4, result


def test_memory_py_fails_above_max_ratio(run_python):
    """--max-ratio turns the ratio into an exit status (checked with an
    impossible bound, so the check itself is exercised)."""
    code = f"""
        import runpy, sys
        sys.argv = [{str(MEMORY_PY)!r}, "--tasks", "2000", "--reps", "1", "--loops", "goloop,asyncio",
                    "--max-ratio", "0.01"]
        runpy.run_path(sys.argv[0], run_name="__main__")
    """
    r = run_python(code, timeout=240)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "exceeds 0.01" in r.stderr
