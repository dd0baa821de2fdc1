"""goloop.dump() and GOLOOP_DUMP_SIGNAL (goloop/_dump.py): every task of every
goloop loop, its state, how long its step has run, its Python stack —
parsed here by the format README.md documents."""
import asyncio
import io
import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from child_env import subprocess_env

import goloop

HEADER = re.compile(r"^goloop dump: pid=(\d+) loops=(\d+) stacks_in_use=(\d+) "
                    r"stacks_cached=(\d+) stacks_mapped=(\d+)$")
LOOP = re.compile(r"^loop id=0x[0-9a-f]+ thread=(\S+) running=(yes|no) tasks=(\d+) preempted=(\d+)$")
TASK = re.compile(r"^  task name=(?P<name>'[^']*') state=(?P<state>running|preempted|await_|waiting|ready)"
                  r"(?: step=(?P<step>\d+\.\d{3})s stack=(?P<stack>\d+))?(?: on=(?P<on>.+))?$")
FRAME = re.compile(r'^    File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>\S+)$')


def parse(text):
    """{'header': match, 'loops': [{'line': match, 'tasks': {name: {...}}}]};
    fails on any line the documented format does not allow."""
    lines = text.splitlines()
    assert lines[-1] == "end goloop dump", lines[-1]
    header = HEADER.match(lines[0])
    assert header, lines[0]
    loops, task = [], None
    for line in lines[1:-1]:
        if m := LOOP.match(line):
            loops.append({"line": m, "tasks": {}})
            task = None
        elif m := TASK.match(line):
            task = {"state": m["state"], "step": m["step"] and float(m["step"]),
                    "stack": m["stack"] and int(m["stack"]), "on": m["on"], "funcs": []}
            loops[-1]["tasks"][m["name"].strip("'")] = task
        elif m := FRAME.match(line):
            task["funcs"].append(m["func"])
        else:
            # A frame's source line, or a traceback's "[Previous line repeated]".
            assert task is not None and line.startswith("      "), line
    return {"header": header, "loops": loops}


def busy(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_every_state_with_its_stack():
    def sync_side():
        return goloop.await_(asyncio.sleep(0.5))

    async def in_await_():
        sync_side()

    async def hog():
        await asyncio.sleep(0)
        busy(0.6)

    async def waits():
        await asyncio.get_running_loop().create_future()

    async def main():
        tasks = [asyncio.create_task(hog(), name="hog"),
                 asyncio.create_task(in_await_(), name="in-await"),
                 asyncio.create_task(waits(), name="waits")]
        await asyncio.sleep(0.2)
        ready = asyncio.create_task(asyncio.sleep(0), name="ready")
        out = io.StringIO()
        goloop.dump(out)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, ready, return_exceptions=True)
        return out.getvalue()

    with asyncio.Runner(loop_factory=lambda: goloop.new_event_loop(time_slice=0.005)) as runner:
        text = runner.run(main())
    dump = parse(text)
    assert int(dump["header"][1]) == os.getpid()
    assert int(dump["header"][3]) >= 3          # stacks in use: at least the three steps'
    [loop] = [lp for lp in dump["loops"] if lp["line"][2] == "yes"]
    assert loop["line"][1] == threading.current_thread().name
    tasks = loop["tasks"]
    main_task = next(t for n, t in tasks.items() if t["state"] == "running")
    assert main_task["funcs"][-1] == "main"     # the stack ends where dump() was called
    assert tasks["hog"]["state"] == "preempted"
    assert tasks["hog"]["step"] > 0.05            # it computed for a while
    assert tasks["hog"]["funcs"][-2:] == ["hog", "busy"]
    assert tasks["hog"]["stack"] > 0
    assert tasks["in-await"]["state"] == "await_"
    assert tasks["in-await"]["funcs"][:3] == ["in_await_", "sync_side", "sleep"]
    assert tasks["in-await"]["on"].startswith("<Future pending")
    assert tasks["waits"]["state"] == "waiting"
    assert tasks["waits"]["funcs"] == ["waits"]
    assert tasks["ready"]["state"] == "ready"
    assert int(loop["line"][4]) == 1               # preempted=1: the hog


def test_loops_in_other_threads_are_listed():
    started, release = threading.Event(), threading.Event()

    async def parked_forever():
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.01)

    def thread_main():
        with asyncio.Runner(loop_factory=goloop.new_event_loop) as runner:
            runner.run(parked_forever())

    t = threading.Thread(target=thread_main, name="loop-thread")
    t.start()
    try:
        assert started.wait(10)
        out = io.StringIO()
        goloop.dump(out)
    finally:
        release.set()
        t.join(10)
    dump = parse(out.getvalue())
    [loop] = [lp for lp in dump["loops"] if lp["line"][1] == "loop-thread"]
    assert loop["line"][2] == "yes"
    [task] = loop["tasks"].values()
    assert task["funcs"][0] == "parked_forever"


def test_dump_signal_prints_while_a_task_computes(tmp_path):
    program = tmp_path / "prog.py"
    program.write_text(textwrap.dedent("""
        import asyncio, os, signal, sys, time
        import goloop

        def crunch():
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                pass

        async def computes():
            await asyncio.sleep(0)
            os.kill(os.getpid(), signal.SIGUSR1)
            crunch()

        async def main():
            await asyncio.create_task(computes(), name="computes")
            print("done", flush=True)

        goloop.run(main())
    """))
    proc = subprocess.run([sys.executable, "-P", str(program)], capture_output=True, text=True,
                          env=subprocess_env({"GOLOOP_DUMP_SIGNAL": "usr1"}), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n"       # the signal no longer ends it
    start = proc.stderr.index("goloop dump:")
    end = proc.stderr.index("end goloop dump") + len("end goloop dump")
    dump = parse(proc.stderr[start:end])
    [loop] = dump["loops"]
    task = loop["tasks"]["computes"]
    assert task["state"] == "running"
    assert "computes" in task["funcs"]


@pytest.mark.parametrize("value", ["NOPE", "SIG_DFL", "99999", "URG", "SIGKILL", "19"])
def test_bad_dump_signal_is_a_value_error(value, run_python):
    proc = run_python("import goloop", env={"GOLOOP_DUMP_SIGNAL": value})
    assert proc.returncode != 0
    assert "ValueError" in proc.stderr and "GOLOOP_DUMP_SIGNAL" in proc.stderr


def test_dump_with_no_loop():
    out = io.StringIO()
    goloop.dump(out)
    dump = parse(out.getvalue())
    assert all(lp["line"][2] == "no" for lp in dump["loops"])
