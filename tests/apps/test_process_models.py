"""Process models on goloop: what an application does when it forks, spawns
or adds a thread while its event loop runs — with the same assertions on
goloop (1 ms slice) and on stock asyncio.

A task step on goloop runs on a goroutine's stack and is preempted by a
sysmon thread's SIGURG, so every process model poses a question stock
asyncio never meets:

1. multiprocessing "fork" from inside a running task: the child starts
   inside the parent's step (on goloop: on that step's goroutine); can it
   run a loop of its own, with sockets, timers and tasks, and is
   preemption re-armed there (sysmon restarted, SIGURG handled), so that a
   hog beside a ticker is preempted and goloop's preemption count grows?
   asyncio's at-fork hook clears the running loop in the child: goloop's
   child must see none either.  The result comes back through a Queue
   while the parent's loop keeps ticking, and the parent's loop (and its
   preemption) works afterwards.
2. multiprocessing "spawn" from a running loop: a new interpreter that
   imports goloop afresh (its SIGURG handler is the default one), runs a
   loop with preemption and reports through a Pipe.
3. os.fork() called directly in a task step while 50 tasks wait on an
   Event and a hog has just started (on goloop its step is preempted at
   the fork: a goroutine parked in mid-step): the child runs a new loop
   (goloop.run / asyncio.run) with real work and exits with os._exit; it
   must never run the parent's parked hog.  The parent reaps it with
   waitpid(WNOHANG) between sleeps, its other tasks carry on, and its loop
   works afterwards.
4. Two loops at once, one in the main thread and one in another: sockets
   between them, timers, call_soon_threadsafe and run_coroutine_threadsafe
   in both directions.  goloop preempts both loops (no warning).  The
   main loop's preemption works while the thread's loop runs.

The tests with a CPU hog run on `hog_kind`: every correctness assertion
holds on both loops, and the ticker's latency beside the hog is checked
last — stock asyncio, which never preempts, then fails with LatencyLost
(its strict expected failure).

Each scenario runs in a fresh interpreter (`run_python`), so that a fork
copies that interpreter and not pytest's, and so that goloop's
once-per-process warnings are fresh; the scenarios themselves live in
process_targets.py (spawn needs an importable module) and report JSON.
Every wait there has a limit (WAIT_LIMIT), and the interpreter a subprocess
timeout, so a hang fails.

Two more tests pin down where goloop once differed from stock asyncio:

- a SIGURG that is not goloop's, received by a loop started in a fork
  child (which inherits goloop's handler from its parent's running loop),
  must be ignored, as SIGURG's default is, not passed back to goloop's own
  handler (which recursed until RecursionError);
- os.fork() from a running loop, or after one ran, must not make Python
  3.12+ warn that the process is multi-threaded (goloop's sysmon thread is
  stopped around a fork and once no loop runs).
"""
import json
import os
import sys

import pytest

from apps_helpers import GOLOOP, STOCK, child_env, expect_light_latency

APPS_DIR = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.dirname(APPS_DIR)
SCENARIO_TIMEOUT = 90     # seconds for a whole scenario's interpreter: a hang fails

LOOP_MODULE = {GOLOOP: "goloop.loop", STOCK: "asyncio.unix_events"}


def scenario(run_python, kind, name, *args):
    """Run process_targets.scenario_<name>(*args) in a fresh interpreter
    whose loops are `kind`; its JSON report."""
    code = (f"import sys; sys.path[:0] = [{APPS_DIR!r}, {TESTS_DIR!r}]; "
            "import process_targets; process_targets.main()")
    r = run_python(code, name, *args, env=child_env(kind), timeout=SCENARIO_TIMEOUT)
    assert r.returncode == 0, f"scenario {name} exited with {r.returncode}:\n{r.stderr}"
    # Errors a loop only logs (an exception in a callback, a task that died
    # unawaited) print a traceback without failing the scenario.
    assert "Traceback" not in r.stderr, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def no_error(report, who):
    """A child's report, unless it carries the traceback of its failure."""
    assert "error" not in report, f"{who} failed:\n{report['error']}"
    return report


def check_workout(w, kind, pid):
    """What process_targets.workout() reports for a loop of `kind` that
    works: its loop class, a socketpair echo, a timer, gathered tasks, and
    a hog that ran beside a ticker (preempted, on goloop).  The hog's
    latency is left to `latencies`, checked last."""
    assert w["pid"] == pid
    assert w["loop"] == LOOP_MODULE[kind]
    assert w["echo"] == f"PING FROM {pid}"
    assert 0.045 <= w["timer_delay"] < 5, w["timer_delay"]
    assert w["gathered"] == 45
    assert w["hog"]["rounds"] > 0 and w["hog"]["gaps"]
    if kind == GOLOOP:
        # The preemption machinery of this process (sysmon, the SIGURG
        # handler) really parked the hog: not just a lucky ticker.
        assert w["hog"]["preemptions"] > 0, w["hog"]


def check_parent_kept_running(report):
    """The parent's loop ran its ticker while it waited for the child, which
    worked for a whole hog (>= 1 s): ~100 ticks; 10 cannot flake."""
    assert report["parent_ticks_while_waiting"] >= 10, report["parent_ticks_while_waiting"]


def latencies(*workouts):
    """All the ticker gaps of these workouts' hogs."""
    return [gap for w in workouts for gap in w["hog"]["gaps"]]


# --- 1 and 2: multiprocessing ---------------------------------------------------

def test_multiprocessing_fork_child_of_a_running_loop_runs_its_own(hog_kind, run_python):
    report = scenario(run_python, hog_kind, "multiprocessing", hog_kind, "fork")
    child = no_error(report["child"], "the fork child")
    assert report["child_exitcode"] == 0
    assert report["child_pid"] != report["parent_pid"]
    # asyncio's at-fork hook forgets the parent's running loop in the child.
    assert child["running_loop_at_start"] is None
    check_workout(child["workout"], hog_kind, report["child_pid"])
    check_parent_kept_running(report)
    check_workout(report["parent_after"], hog_kind, report["parent_pid"])
    expect_light_latency(latencies(child["workout"], report["parent_after"]), "tick beside a hog")


def test_multiprocessing_spawn_child_of_a_running_loop_runs_its_own(hog_kind, run_python):
    report = scenario(run_python, hog_kind, "multiprocessing", hog_kind, "spawn")
    child = no_error(report["child"], "the spawned child")
    assert report["child_exitcode"] == 0
    assert child["parent_pid"] == report["parent_pid"] != report["child_pid"]
    # A new interpreter: nothing of the parent's loop, SIGURG untouched
    # until its own loop runs (with goloop imported afresh).
    assert child["running_loop_at_start"] is None
    assert child["sigurg_handler_at_start"] == "SIG_DFL"
    check_workout(child["workout"], hog_kind, report["child_pid"])
    check_parent_kept_running(report)
    check_workout(report["parent_after"], hog_kind, report["parent_pid"])
    expect_light_latency(latencies(child["workout"], report["parent_after"]), "tick beside a hog")


# --- 3: os.fork() inside a task -------------------------------------------------

def test_os_fork_in_a_task_beside_parked_tasks(hog_kind, run_python):
    report = scenario(run_python, hog_kind, "os_fork", hog_kind)
    child = no_error(report["child"], "the fork child")
    assert report["child_status"] == 0
    assert child["running_loop_at_start"] is None
    check_workout(child["workout"], hog_kind, report["child_pid"])
    # The parent's hog was copied into the child (parked mid-step on
    # goloop) and must never have run there.
    assert child["parent_hog_rounds_in_child"] == 0
    if hog_kind == GOLOOP:
        # So the fork did happen while a preempted step's goroutine was
        # parked (stock asyncio runs the hog to its end before the forking
        # task goes on).
        assert report["hog_running_at_fork"] is True
    # The parent: its waiting tasks all released, its hog finished, its
    # loop ticking while the child ran and usable afterwards.
    assert report["released"] == list(range(50))
    assert report["parent_hog_rounds"] > 0
    check_parent_kept_running(report)
    check_workout(report["parent_after"], hog_kind, report["parent_pid"])
    expect_light_latency(latencies(child["workout"], report["parent_after"]), "tick beside a hog")


# --- 4: a loop in a thread beside the main thread's -----------------------------

def test_loops_in_the_main_thread_and_another_at_once(hog_kind, run_python):
    report = scenario(run_python, hog_kind, "two_loops", hog_kind)
    thread = no_error(report["thread"], "the thread's loop")
    main = report["main"]
    assert thread["thread"] == "loop-thread"
    assert thread["loop"] == LOOP_MODULE[hog_kind]
    # run_coroutine_threadsafe and call_soon_threadsafe, both directions,
    # each run on the loop it was sent to.
    assert thread["doubled"] == [42, True]
    assert thread["answered"] == "main thread: True"
    assert main["squared"] == [49, "loop-thread"]
    assert thread["inbox"] == ["from main, run on loop-thread"]
    assert 0.045 <= thread["timer_delay"] < 5, thread["timer_delay"]
    # The main loop's client talked to the thread loop's server.
    assert main["replies"] == [f"LINE {i}" for i in range(20)]
    assert main["thread_alive"] is False
    if hog_kind == GOLOOP:
        # Every thread's loop is preempted (tests/preempt/test_thread_preemption.py;
        # on 3.11 through goloop's tracer thread).
        assert report["warnings"] == [], report["warnings"]
        assert main["hog"]["preemptions"] > 0, main["hog"]
    else:
        assert report["warnings"] == []
    expect_light_latency(main["hog"]["gaps"], "main loop's tick beside a hog")


# --- where goloop once differed -----------------------------------------------------

def test_a_foreign_sigurg_in_a_fork_child_is_harmless(loop_kind, run_python):
    """SIGURG is ignored by default (the kernel sends it for a socket's
    out-of-band data), and goloop passes on the SIGURGs it did not ask for
    to the handler that was there before its own.  In a fork child that
    handler is goloop's own, inherited from the parent's running loop."""
    report = scenario(run_python, loop_kind, "foreign_sigurg_in_fork_child", loop_kind)
    assert report["child_status"] == 0
    assert report["child"] == "loop went on"


def test_fork_from_a_running_loop_does_not_warn_as_stock_asyncio_does_not(loop_kind, run_python):
    """Python 3.12+ warns at os.fork() when it sees more than one thread in
    the process.  A single-threaded asyncio program never sees it, and
    goloop stops its sysmon thread around a fork and once no loop runs."""
    report = scenario(run_python, loop_kind, "fork_warnings", loop_kind)
    assert report["in_task"] == [] and report["after_loop"] == [], report
