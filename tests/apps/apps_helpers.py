"""What the application tests (tests/apps) share.

Every application runs twice with the same assertions: on goloop, with
preemption at a 1 ms slice, and on stock asyncio.  The correctness tests pass
on both.  The latency tests (a CPU-heavy request running while light requests
are made) raise `LatencyLost` on stock asyncio, which never preempts: that
variant is a strict expected failure (conftest.py's `hog_kind`), so it proves
the test can tell the two loops apart.

Servers run either in the test's own loop (aiohttp, websockets, database
clients) or as a child process (uvicorn, gunicorn), started by
`ServerProcess` with the loop chosen by its command line and GOLOOP_TIME_SLICE
set for goloop.
"""
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import goloop
from child_env import subprocess_env

GOLOOP = "goloop"
STOCK = "asyncio"
KINDS = (GOLOOP, STOCK)

TIME_SLICE = 0.001          # the slice the issue asks for: 1 ms
HOG_SECONDS = 2.0           # how long a CPU-heavy request burns the CPU
LIGHT_LATENCY_LIMIT = 0.6   # what a light request may take beside it; stock
                            # asyncio takes the rest of HOG_SECONDS, goloop ~ms


class LatencyLost(AssertionError):
    """A light request waited for a CPU-heavy one: what a loop that does not
    preempt does.  The stock variants of the latency tests fail with exactly
    this."""


def expect_light_latency(latencies, what="light request"):
    """Raise LatencyLost unless every latency (seconds) is within
    LIGHT_LATENCY_LIMIT."""
    worst = max(latencies)
    if worst > LIGHT_LATENCY_LIMIT:
        raise LatencyLost(
            f"a {what} took {worst * 1000:.0f} ms beside a CPU-heavy one "
            f"(limit {LIGHT_LATENCY_LIMIT * 1000:.0f} ms; all: "
            f"{[round(x * 1000) for x in latencies]} ms)")


def burn_cpu(seconds=HOG_SECONDS):
    """Pure-Python work for `seconds` of wall time, with no await: the
    CPU-heavy request.  Returns how many rounds it made."""
    end = time.perf_counter() + seconds
    rounds = 0
    while time.perf_counter() < end:
        sum(i * i for i in range(200))
        rounds += 1
    return rounds


def new_loop(kind):
    """A new event loop of `kind`: goloop with preemption at TIME_SLICE, or
    the stock one asyncio.new_event_loop() makes."""
    if kind == GOLOOP:
        return goloop.new_event_loop(preempt=True, time_slice=TIME_SLICE)
    if kind == STOCK:
        return asyncio.new_event_loop()
    raise ValueError(kind)


class HighWater:
    """How many of something are open at once, and the most there were: a
    context manager around each one's life (`with counter: ...`)."""

    def __init__(self):
        self.now = self.most = 0

    def __enter__(self):
        self.now += 1
        self.most = max(self.most, self.now)
        return self

    def __exit__(self, *exc_info):
        self.now -= 1
        return False


async def light_requests_beside_hog(light_request, concurrency=4):
    """Keep `concurrency` tasks making light requests, each `await
    light_request(n)` (n: which task), while one task burns the CPU for
    HOG_SECONDS without awaiting.  Returns (every request's latency, how
    many were answered while the hog burned, the hog's rounds).  Each whole
    request is timed, however many round trips it makes: an untimed one
    straddling the hog would let a loop that does not preempt pass."""
    latencies, during_hog = [], []
    hog = None

    async def light(n):
        while hog is None or not hog.done():
            hog_running = hog is not None
            started = time.perf_counter()
            await light_request(n)
            latencies.append(time.perf_counter() - started)
            if hog_running and not hog.done():
                during_hog.append(latencies[-1])

    async def burn():
        return burn_cpu()

    lights = [asyncio.create_task(light(n)) for n in range(concurrency)]
    # The light tasks are waiting for answers when the hog starts.
    await asyncio.sleep(0.05)
    hog = asyncio.create_task(burn())
    rounds = await hog
    await asyncio.gather(*lights)
    return latencies, len(during_hog), rounds


def run(kind, main, *args):
    """Run main(*args) (a coroutine function) on a new loop of `kind`, as
    asyncio.run() does; its result."""
    with asyncio.Runner(loop_factory=lambda: new_loop(kind)) as runner:
        return runner.run(main(*args))


def run_bounded(kind, main, *args, timeout=30):
    """run(kind, main, *args), but a hang (a missed wakeup waits forever)
    fails with TimeoutError after `timeout` seconds (every exchange of the
    application tests takes a few seconds at most) instead of stopping the
    suite."""
    async def bounded():
        async with asyncio.timeout(timeout):
            return await main(*args)

    return run(kind, bounded)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(kind, extra=None):
    """The environment of a child server process of `kind`: this goloop
    importable, and on goloop the 1 ms slice."""
    env = {"PYTHONUNBUFFERED": "1"}
    if kind == GOLOOP:
        env["GOLOOP_TIME_SLICE"] = str(TIME_SLICE)
    env.update(extra or {})
    return subprocess_env(env)


class ServerProcess:
    """A server in a child process: `argv` after the interpreter (e.g.
    ["-m", "uvicorn", ...]), listening on `port` of 127.0.0.1.  A context
    manager: entering waits until the port accepts connections (or the child
    dies, which raises with its output); leaving stops it with SIGTERM (then
    SIGKILL) and keeps its output in `.output`."""

    def __init__(self, argv, port, kind, env=None, cwd=None, startup_timeout=60):
        self.argv = [sys.executable, *argv]
        self.port = port
        self.env = child_env(kind, env)
        self.cwd = cwd
        self.startup_timeout = startup_timeout
        self.proc = None
        self.output = ""

    def __enter__(self):
        self.proc = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.output = self.proc.stdout.read()
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not listen on {self.port} within "
                           f"{self.startup_timeout} s:\n{self.output}")

    def stop(self, sig=signal.SIGTERM):
        """Stop the child (the whole session: gunicorn's workers too); its
        return code."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout and not self.proc.stdout.closed:
            self.output += self.proc.stdout.read()
            self.proc.stdout.close()
        return self.proc.returncode

    def __exit__(self, *exc):
        self.stop()
