"""The README's main-job command ends in `python -m goloop.demo`: it must run
and show what it claims."""
import importlib.util
import re

# A row of the first section's table: loop, light p50, p99, max (ms), done.
LATENCY_ROW = re.compile(r"^  (\w+) +([\d.]+) ms +([\d.]+) ms +([\d.]+) ms +(\d+)$", re.M)


def test_demo_runs_and_shows_each_section(run_module):
    r = run_module("goloop.demo", timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "== a CPU-bound handler does not stall the loop" in out
    assert "light p50  light p99  light max  light requests done" in out
    rows = {m[1]: [float(x) for x in m.groups()[1:]] for m in LATENCY_ROW.finditer(out)}
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    assert sorted(rows) == sorted(["asyncio", "goloop"] + ["uvloop"] * has_uvloop), out
    assert all(done >= 1 for *_, done in rows.values())
    # Preempted, goloop answers light requests between the heavy ones' slices;
    # asyncio makes each wait for the heavy request in progress (~0.5 s).
    # Half is a margin no loaded machine should eat.
    assert rows["goloop"][2] < rows["asyncio"][2] / 2, out
    assert "sorted by length: ['fig', 'pear', 'kiwi', 'banana']" in out
    assert out.count("RecursionError") == 2
    assert "loop: EventLoop; steps that ran on a goroutine: 10000 of 10000" in out
    assert "goloop   resume+park round trip:" in out
