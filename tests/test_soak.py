"""scripts/soak.py --quick passes: a smoke run of the soak (50,000 task
lifecycles with preemption, 5,000 TCP connections) in a child interpreter,
ending with flat RSS, the fd count back to its baseline and every result
right.  The full soak (make soak) takes minutes and is not part of the suite.

The child is started as tests/conftest.py starts its children (-P, and
child_env.subprocess_env so it imports the goloop under test)."""
import importlib.util
import os
import re
import subprocess
import sys

from child_env import subprocess_env

SOAK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "soak.py")


def run_soak(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-P", SOAK, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=subprocess_env(),
    )


def test_quick_soak_is_flat_and_right():
    r = run_soak("--quick")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # The verdict comes from the script's own checks, not just its exit:
    # a script that crashed early or skipped its checks prints no PASS.
    assert re.search(r"^VERDICT: PASS", r.stdout, re.M), out
    # Both phases reached their last checkpoint.
    assert re.search(r"^tasks\s+100%\s+50000\b", r.stdout, re.M), out
    assert re.search(r"^connections\s+100%\s+5000\b", r.stdout, re.M), out
    # The burners were preempted: the task phase's preemption count is > 0.
    preemptions = int(re.search(r"\b(\d+) preemptions,", r.stdout).group(1))
    assert preemptions > 0, out


def load_soak():
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def checkpoints(soak, rss_mib, fds):
    return [soak.Checkpoint("tasks", f"{10 * k}%", k, int(r * 1024), f, 0, 0.0)
            for k, (r, f) in enumerate(zip(rss_mib, fds))]


def judged(soak, rss_mib, fds):
    report = soak.Report(checkpoints=checkpoints(soak, rss_mib, fds))
    soak.judge_flatness(report, "tasks")
    return report.failures


def test_verdict_catches_growth_and_fd_leaks(monkeypatch):
    """The soak's judgement fails a run whose RSS keeps growing after the
    warm-up, or whose fd count does not come back, and passes a flat one
    (warm-up growth before the 20% checkpoint does not count).  Judged as
    outside the sanitizers, which turn the RSS check off."""
    monkeypatch.delenv("GOLOOP_SANITIZED", raising=False)
    soak = load_soak()
    flat = [20, 30, 40, 40.5, 40, 41, 40.5, 41, 41, 41.5, 41]
    leaking = [20, 30, 40, 42, 44, 46, 48, 50, 52, 54, 56]
    assert judged(soak, flat, [10] * 11) == []
    assert any("RSS grew" in f for f in judged(soak, leaking, [10] * 11))
    assert any("fds at" in f for f in judged(soak, flat, [10] * 10 + [11]))
