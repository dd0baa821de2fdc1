"""asyncio's task introspection (3.14+) sees goloop's tasks as it sees stock
ones: `python -m asyncio ps PID` and `pstree PID`, which read another
process's memory, list every task of a program running on goloop —
including one whose step is preempted in the middle of a computation — and
asyncio.capture_call_graph() / format_call_graph() inside a task give the
same graph on both loops."""
import asyncio
import re
import subprocess
import sys

import pytest

from loop_helpers import normalize, run_both

pytestmark = pytest.mark.skipif(sys.version_info < (3, 14), reason="asyncio's call graphs are new in 3.14")

PROGRAM = r"""
import asyncio, sys, time
import goloop

def burn(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass

async def sleeper():
    await asyncio.sleep(3600)

async def hog():
    burn(3600)

async def pair():
    await asyncio.gather(sleeper(), sleeper())

async def ready():
    # Runs only once the hog, started first, is preempted in its step.
    await asyncio.sleep(0.2)
    print("ready", goloop.stats()["preemptions"] > 0, flush=True)

async def main():
    async with asyncio.TaskGroup() as tg:
        tg.create_task(hog(), name="the-hog")
        tg.create_task(pair(), name="the-pair")
        tg.create_task(sleeper(), name="lone-sleeper")
        tg.create_task(ready(), name="ready")

goloop.run(main())
"""


def _inspect(tmp_path, *commands):
    """Start PROGRAM, wait until its hog is preempted mid-step, run each
    `python -m asyncio <command> PID`; their outputs."""
    script = tmp_path / "app.py"
    script.write_text(PROGRAM)
    p = subprocess.Popen([sys.executable, "-P", str(script)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline().split()
        assert line == ["ready", "True"], (line, p.stderr.read() if p.poll() is not None else "")
        outs = []
        for command in commands:
            r = subprocess.run([sys.executable, "-m", "asyncio", command, str(p.pid)],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0 and "ermission" in r.stderr:
                pytest.skip(f"this machine does not let one process read another's memory: {r.stderr[-300:]}")
            assert r.returncode == 0, r.stderr
            outs.append(r.stdout)
        return outs
    finally:
        p.kill()
        p.communicate()


def test_asyncio_ps_and_pstree_show_goloop_tasks_including_a_preempted_one(tmp_path):
    ps, pstree = _inspect(tmp_path, "ps", "pstree")
    rows = {line.split()[2]: line for line in ps.splitlines()[2:] if line.strip()}
    assert {"the-hog", "the-pair", "lone-sleeper"} <= set(rows), ps   # "ready" is done
    assert " hog " in rows["the-hog"] and "main" in rows["the-hog"], ps
    assert "sleep -> sleeper" in rows["lone-sleeper"], ps
    # the pair's two children, awaited by it
    children = [line for line in ps.splitlines() if "the-pair" in line and "sleeper" in line]
    assert len(children) == 2, ps
    for name in ("the-hog", "the-pair", "lone-sleeper"):
        assert f"(T) {name}" in pstree, pstree
    assert "hog " in pstree and "app.py" in pstree, pstree


async def _graph_in_a_task():
    async def leaf():
        await asyncio.sleep(0)
        return asyncio.format_call_graph()

    async def middle():
        return await asyncio.create_task(leaf(), name="leaf")

    return await asyncio.gather(middle(), middle())


def test_capture_call_graph_inside_tasks_is_the_same_as_on_asyncio():
    stock, ours = run_both(_graph_in_a_task)
    assert "leaf" in stock[0] and "middle" in stock[0], stock[0]
    # Task-N: the counter goes on from one run to the next
    same = [re.sub(r"Task-\d+", "Task-?", normalize(g)) for g in (*stock, *ours)]
    assert same[2:] == same[:2], (ours, stock)
