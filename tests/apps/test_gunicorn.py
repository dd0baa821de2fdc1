"""gunicorn with uvicorn workers on goloop: the pre-fork process model; and,
with the same assertions, on stock asyncio.

gunicorn's master forks its workers, and each worker runs uvicorn on its own
event loop; goloop's worker class is uvicorn's UvicornWorker with
CONFIG_KWARGS naming the loop factory "goloop:new_event_loop"
(gunicorn_workers.py, where the stock counterpart names "asyncio").  The
same module, as gunicorn's config (`-c python:gunicorn_workers`), runs a loop
of the workers' kind with a CPU-bound task in the master before it forks, so
on goloop the master has preempted steps, started sysmon's thread and cached
stacks when it forks: the workers start from that state, as they would
under a `--preload` app that ran async setup code (the app is preloaded).

- every worker runs the chosen loop: each worker's lifespan records its
  loop, and requests are seen to be served by two different worker pids,
  on that loop (a worker kept busy in one C call, time.sleep() inside
  goloop.atomic(), accepts nothing, so the next connection goes to the
  other one);
- SIGHUP: gunicorn replaces both workers (new pids, their lifespans on the
  chosen loop, the old ones shut down), and the new ones serve; SIGTERM
  then stops the master gracefully, exit status 0, every worker's lifespan
  shut down;
- preemption and latency in every worker: one CPU-heavy request in each of
  the two workers (both busy, so that no idle worker could answer for a
  loop that does not preempt), then light requests on new connections,
  timed: goloop answers them (`hog_kind`'s stock variant is the strict xfail),
  and each worker's preemption count grew while its hog ran — so sysmon
  works in every forked worker, whatever the master left behind.

Clients run in this process with httpx on goloop's loop without preemption
(test_uvicorn.run_client says why).

Last, what the /block route ran into: a signal handled by
loop.add_signal_handler() (UvicornWorker's SIGQUIT) arriving during a step
goloop cannot preempt, which sysmon's repeated SIGURGs used to crowd out of
asyncio's signal wakeup socket; sysmon now holds its requests back while
that socket is half full (csrc/cpython/preempt.c).
"""
import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import pytest

httpx = pytest.importorskip("httpx", reason="the apps extra is not installed")
pytest.importorskip("gunicorn", reason="the apps extra is not installed")

from apps_helpers import GOLOOP, HOG_SECONDS, STOCK, ServerProcess, child_env, expect_light_latency, free_port
from test_uvicorn import (APP, APPS_DIR, EVENTS_ENV, EXPECTED_LOOP, client, expect_loop_report, get_json,
                          read_events, run_client, serving, wait_for_file)

WORKER_CLASS = {GOLOOP: "gunicorn_workers.GoloopUvicornWorker", STOCK: "gunicorn_workers.AsyncioUvicornWorker"}
WORKERS = 2
BLOCK_SECONDS = 0.6       # how long one worker accepts nothing (to reach the other)
LIGHT_REQUESTS = 20
BOOT_TIMEOUT = 90         # workers import FastAPI: slow on a loaded machine


def gunicorn_server(kind, tmp_path):
    """gunicorn with WORKERS uvicorn workers of `kind`: (ServerProcess, the
    file its workers' lifespans write to, gunicorn's log file)."""
    port = free_port()
    events, log = tmp_path / "events", tmp_path / "gunicorn.log"
    argv = ["-m", "gunicorn", APP, "-c", "python:gunicorn_workers", "-k", WORKER_CLASS[kind],
            "-w", str(WORKERS), "-b", f"127.0.0.1:{port}",
            # The app is imported once, in the master: workers (and the ones
            # SIGHUP makes) start at once instead of importing FastAPI each.
            "--preload",
            # Logs, and whatever the processes write to stderr, to a file: a
            # pipe that ServerProcess reads only at exit could fill up.
            "--error-logfile", str(log), "--capture-output",
            # gunicorn 27 would otherwise open a control socket in $HOME.
            "--no-control-socket", "--graceful-timeout", "20"]
    return ServerProcess(argv, port, kind, env={EVENTS_ENV: str(events)}, cwd=APPS_DIR), events, log


def read_log(log):
    with open(log) as f:
        return f.read()


def base_url(server):
    return f"http://127.0.0.1:{server.port}"


def live_workers(events):
    """{pid: loop} of the workers whose lifespan started and has not shut
    down."""
    live = {}
    for what, pid, loop in read_events(events):
        if what == "startup":
            live[pid] = loop
        else:
            live.pop(pid, None)
    return live


def wait_for_workers(events, exclude=(), timeout=BOOT_TIMEOUT):
    """Wait until WORKERS workers not in `exclude` have started (and every
    worker in `exclude` has shut down); their {pid: loop}."""
    deadline = time.monotonic() + timeout
    while True:
        live = live_workers(events)
        if len(live) == WORKERS and not set(live) & set(exclude):
            return live
        assert time.monotonic() < deadline, f"workers: {read_events(events)}"
        time.sleep(0.05)


async def clients_on_two_workers(url, tmp_path):
    """Two httpx clients of one connection each, served by two different
    workers: (client_a, client_b, pid_a, pid_b).

    The first client's worker is kept in time.sleep() inside the loop
    (/block) while the second connects, so the other worker accepts it;
    should the sleeper wake before that, try again."""
    client_a = client(url, limits=httpx.Limits(max_connections=1))
    pid_a = (await get_json(client_a, "/loop"))["pid"]
    for attempt in range(3):
        marker = str(tmp_path / f"block-{attempt}")
        block = asyncio.create_task(client_a.get("/block", params={"seconds": BLOCK_SECONDS, "marker": marker}))
        await wait_for_file(marker)
        client_b = client(url, limits=httpx.Limits(max_connections=1))
        pid_b = (await get_json(client_b, "/loop"))["pid"]
        (await block).raise_for_status()
        if pid_b != pid_a:
            return client_a, client_b, pid_a, pid_b
        await client_b.aclose()
    raise AssertionError(f"every connection went to worker {pid_a}")


async def loop_reports_of_new_connections(url, n):
    """/loop answers, each on a connection of its own."""
    async with client(url, headers={"Connection": "close"}) as fresh:
        return [await get_json(fresh, "/loop") for _ in range(n)]


def test_every_worker_runs_the_loop_and_survives_sighup_and_sigterm(loop_kind, tmp_path):
    process, events, log = gunicorn_server(loop_kind, tmp_path)
    with serving(process, log) as server:
        master = server.proc.pid
        workers = wait_for_workers(events)
        assert master not in workers
        assert set(workers.values()) == {EXPECTED_LOOP[loop_kind]}, workers

        async def two_workers_report():
            client_a, client_b, pid_a, pid_b = await clients_on_two_workers(base_url(server), tmp_path)
            try:
                return await get_json(client_a, "/loop"), await get_json(client_b, "/loop")
            finally:
                await client_a.aclose()
                await client_b.aclose()

        for report in run_client(loop_kind, two_workers_report):
            expect_loop_report(report, loop_kind)
            assert report["pid"] in workers, (report, workers)

        os.kill(master, signal.SIGHUP)
        new_workers = wait_for_workers(events, exclude=workers)
        assert set(new_workers.values()) == {EXPECTED_LOOP[loop_kind]}, new_workers
        for report in run_client(loop_kind, loop_reports_of_new_connections, base_url(server), 6):
            expect_loop_report(report, loop_kind)
            assert report["pid"] in new_workers, (report, new_workers)

        os.kill(master, signal.SIGTERM)     # the master only: it stops its workers
        returncode = server.proc.wait(timeout=60)
    output = server.output + read_log(log)
    assert returncode == 0, output[-3000:]
    assert "Shutting down: Master" in output, output[-3000:]
    # Every worker, old and new, ran its lifespan's shutdown.
    shut_down = {pid for what, pid, _ in read_events(events) if what == "shutdown"}
    assert shut_down == set(workers) | set(new_workers), read_events(events)
    # The master ran a loop of the workers' kind before forking them.
    warm_up = re.search(r"master warm-up ran on (goloop preemptions=(\d+)|asyncio)", output)
    assert warm_up, output[-3000:]
    if loop_kind == GOLOOP:
        assert int(warm_up.group(2)) > 0, warm_up.group(0)
    else:
        assert warm_up.group(1) == "asyncio"


def test_light_requests_and_preemption_beside_a_hog_in_every_worker(hog_kind, tmp_path):
    process, events, log = gunicorn_server(hog_kind, tmp_path)
    with serving(process, log) as server:
        workers = wait_for_workers(events)

        async def main():
            client_a, client_b, pid_a, pid_b = await clients_on_two_workers(base_url(server), tmp_path)
            try:
                before = {pid_a: await get_json(client_a, "/loop"), pid_b: await get_json(client_b, "/loop")}
                markers = [str(tmp_path / "hog-a"), str(tmp_path / "hog-b")]
                hogs = [asyncio.create_task(c.get("/hog", params={"seconds": HOG_SECONDS, "marker": m}))
                        for c, m in zip((client_a, client_b), markers)]
                for marker in markers:
                    await wait_for_file(marker)
                latencies, light_pids = [], set()
                async with client(base_url(server), headers={"Connection": "close"}) as fresh:
                    for _ in range(LIGHT_REQUESTS):
                        start = time.perf_counter()
                        light_pids.add((await get_json(fresh, "/hello"))["pid"])
                        latencies.append(time.perf_counter() - start)
                hog_reports = [(await hog).json() for hog in hogs]
                return before, hog_reports, latencies, light_pids
            finally:
                await client_a.aclose()
                await client_b.aclose()

        before, hog_reports, latencies, light_pids = run_client(hog_kind, main)
    assert light_pids <= set(workers), (light_pids, workers)
    expect_light_latency(latencies)
    # Both workers ran a hog, and each was preempted in its own process.
    assert {report["pid"] for report in hog_reports} == set(before) == set(workers)
    for report in hog_reports:
        expect_loop_report(report, hog_kind)
        assert report["preemptions"] > before[report["pid"]]["preemptions"], (before, report)


# --- a goloop bug the /block route above runs into ----------------------------

SIGNAL_DURING_UNPREEMPTIBLE_STEP = """
import asyncio, os, signal, sys, threading, time

async def main(kind):
    loop = asyncio.get_running_loop()
    handled = asyncio.Event()
    # As UvicornWorker does for SIGQUIT (and hypercorn's serve() for SIGTERM):
    # asyncio then points signal.set_wakeup_fd() at its self-pipe.
    loop.add_signal_handler(signal.SIGUSR1, handled.set)
    threading.Timer(0.7, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    if kind == "goloop":
        import goloop
        section = goloop.atomic()
    else:
        import contextlib
        section = contextlib.nullcontext()   # asyncio never preempts anyway
    with section:
        time.sleep(1)                        # a step no loop preempts, for 1 s
    try:
        await asyncio.wait_for(handled.wait(), 1)
        return "SIGUSR1 handled"
    except TimeoutError:
        return "SIGUSR1 lost"

kind = sys.argv[1]
if kind == "goloop":
    import goloop
    print(goloop.run(main(kind), time_slice=0.001))
else:
    print(asyncio.run(main(kind)))
"""


@pytest.mark.parametrize("kind", [GOLOOP, STOCK])
def test_a_signal_arriving_during_an_unpreemptible_step_is_handled(kind):
    """A signal for loop.add_signal_handler() that arrives while a step runs
    1 s without being preemptible (goloop.atomic(), as /block; a long C call
    or a held lock do the same) must reach its handler once the step ends,
    with no "Exception ignored when trying to write to the signal wakeup fd"
    on stderr (what goloop printed when it lost the signal: in a gunicorn
    worker that is SIGQUIT, in hypercorn SIGTERM)."""
    result = subprocess.run([sys.executable, "-c", SIGNAL_DURING_UNPREEMPTIBLE_STEP, kind], cwd=APPS_DIR,
                            env=child_env(kind), capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "SIGUSR1 handled\n"), (result.stdout, result.stderr[-2000:])
    assert "Exception ignored" not in result.stderr, result.stderr[-2000:]
