"""Preemption and greenlet: a task whose steps use greenlets keeps its
worker's stack (csrc/cpython/greenlets.c).

greenlet keeps each greenlet's part of the C stack by address; a task step
that switches into a greenlet started by an earlier step on another
worker's stack overwrites that worker's live frames.  That happens as soon
as another task's preempted step holds the first worker.  The probes run
real greenlet users — plain greenlets switched across steps, SQLAlchemy 2's
asyncio ORM on aiosqlite, greenback's portals — beside CPU hogs that get
preempted, at three slices, each in a subprocess (a crash must not take the
suite with it); the controls run them with the pinning off and must see
them crash or compute wrong results.
"""
import pytest

from preempt_helpers import run_probe

SLICES = [0.0002, 0.001, 0.01]

greenlet = pytest.importorskip("greenlet")


def check_probe(run_python, script, *args):
    r, out = run_probe(run_python, script, *args, timeout_s=90)
    assert r.returncode == 0, f"exit {r.returncode}:\n{r.stderr[-3000:]}"
    assert out["correct"], out
    assert out["preemptions"] >= 5, out   # the hogs were preempted around them


def check_control(run_python, script, *args):
    """With pinning off, the probe must crash or compute wrong results;
    the corruption depends on which worker a step lands on, so up to three
    runs are given to show it."""
    outcomes = []
    for _ in range(3):
        r, out = run_probe(run_python, script, *args, "--unsafe", timeout_s=30)
        outcomes.append((r.returncode, out))
        if r.returncode != 0 or not out["correct"]:
            return
    pytest.fail(f"the probe did not catch unpinned greenlets: {outcomes}")


@pytest.mark.parametrize("time_slice", SLICES)
def test_greenlets_switched_across_steps_among_preempted_tasks(run_python, time_slice):
    check_probe(run_python, "greenlet_probe.py", time_slice)


def test_control_greenlets_without_pinning(run_python):
    check_control(run_python, "greenlet_probe.py", 0.001)


@pytest.mark.parametrize("time_slice", SLICES)
def test_sqlalchemy_asyncio_orm_on_aiosqlite_among_preempted_tasks(run_python, tmp_path, time_slice):
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("aiosqlite")
    check_probe(run_python, "sqlalchemy_probe.py", tmp_path, time_slice)


def test_control_sqlalchemy_without_pinning(run_python, tmp_path):
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("aiosqlite")
    check_control(run_python, "sqlalchemy_probe.py", tmp_path, 0.001)


@pytest.mark.parametrize("time_slice", SLICES)
def test_greenback_portals_among_preempted_tasks(run_python, time_slice):
    pytest.importorskip("greenback")
    check_probe(run_python, "greenback_probe.py", time_slice)


def test_control_greenback_without_pinning(run_python):
    pytest.importorskip("greenback")
    check_control(run_python, "greenback_probe.py", 0.001)


def test_a_task_keeps_its_worker_only_while_its_greenlets_live(run_python):
    r = run_python("""
        import asyncio, greenlet, goloop

        async def user(go_on):
            main_g = greenlet.getcurrent()
            child = greenlet.greenlet(lambda: main_g.switch("paused") or "done")
            assert child.switch() == "paused"
            await go_on.wait()              # suspended with child alive
            assert child.switch() == "done" and child.dead
            await asyncio.sleep(0)          # suspended with none alive

        async def main():
            go_on = asyncio.Event()
            t = asyncio.create_task(user(go_on))
            await asyncio.sleep(0.01)
            during = goloop.stats()["step_workers_pinned"]
            go_on.set()
            await asyncio.sleep(0.01)
            after = goloop.stats()["step_workers_pinned"]
            await t
            return during, after

        print(*goloop.run(main()))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "0"]


def test_a_step_that_first_imports_greenlet_keeps_its_worker(run_python):
    """greenlet imported inside a step, before goloop's trace function could
    be in place: what that step switched is unknown, so its task keeps the
    worker until it ends."""
    r = run_python("""
        import asyncio, sys, goloop
        assert "greenlet" not in sys.modules

        async def user(go_on):
            import greenlet                 # first imported in this step
            main_g = greenlet.getcurrent()
            child = greenlet.greenlet(lambda: main_g.switch("paused") or "done")
            assert child.switch() == "paused"
            await go_on.wait()              # suspended, child alive, untraced
            assert child.switch() == "done"

        async def main():
            go_on = asyncio.Event()
            t = asyncio.create_task(user(go_on))
            await asyncio.sleep(0.01)
            during = goloop.stats()["step_workers_pinned"]
            go_on.set()
            await t
            return during, goloop.stats()["step_workers_pinned"]

        print(*goloop.run(main()))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "0"]


def test_goloop_trace_function_calls_the_one_it_replaced(run_python):
    r = run_python("""
        import asyncio, greenlet, goloop
        events = []
        greenlet.settrace(lambda event, args: events.append(event))

        async def main():
            g = greenlet.greenlet(lambda: 42)
            return g.switch()

        assert goloop.run(main()) == 42
        assert greenlet.gettrace() is not None and "switch" in events, events
        print("ok")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
