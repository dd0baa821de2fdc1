"""Preemption: what it buys (fairness) and what it costs (idle CPU, overhead).

On every asyncio loop a task step that computes for a second stalls all else
on the loop for that second.  goloop parks such a step once it has run past
its time slice (10 ms by default; GOLOOP_TIME_SLICE) and runs timers, I/O and
the other tasks before resuming it.

fairness            A TCP server (asyncio streams, in a process of its own)
                    whose "heavy" requests compute ~1 s of pure Python and
                    whose "light" ones are answered at once.  Two clients send
                    heavy requests back to back while a third sends a light
                    request every 5 ms for 3 s and times each round trip:
                    p50, p99 (the headline) and max, and how many were done.
                    Target: goloop's p99 <= 25 ms; the other loops: about a
                    heavy request's time.
idle                A loop awaiting asyncio.sleep(2): the process's CPU time
                    (all threads, getrusage) over those 2 s, in % of a core.
                    Target: goloop <= 1 % (its monitor thread sleeps while the
                    loop waits for I/O).
preemption on/off   goloop only, the cost of preemption: in one process, pairs
                    of 0.1 s of the same pure-Python work alternately on a
                    goloop loop that preempts and one that does not; the
                    fastest on over the fastest off (interference only ever
                    adds time).  Target <= 1.03.  One process, because the
                    machine's load drifts too much between processes for
                    their medians to show 3 %.
Run only when -k names them (EXTRA_WORKLOADS):
idle+timer          idle with a task waking every 100 ms.
work+ticker         ~1 s of pure-Python work in one task step while another
                    task wants to wake every 1 ms: the ticks per second of
                    work that the loop let run (only a preempting loop lets
                    any), and the work's time.
executor+hogs       a task's run_in_executor round trips (mean, ms) while two
                    tasks compute in 50 ms steps: how soon a thread gets the
                    GIL and the loop notices its result.  Run it with
                    GOLOOP_TIME_SLICE=200us too: at small slices the loop
                    would keep the GIL from the executor's thread but for
                    its hand-over (goloop/_steps.py).

goloop's rows also carry its counters (preemptions, sysmon wakeups, longest
uninterrupted step).
"""
import asyncio
import json
import math
import resource
import select
import socket
import subprocess
import sys
import threading
import time

from benchmarks import ROOT, loops
from benchmarks.workload import Metric, Workload, size

HEAVY_CLIENTS = 2
LIGHT_PAUSE = 0.005


# -- the CPU work ------------------------------------------------------------

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def burn(rounds):
    """Pure-Python CPU work: calls, arithmetic, a loop; a millisecond or so a round."""
    for _ in range(rounds):
        fib(20)


def rounds_for(seconds):
    """How many burn() rounds take about `seconds` on this machine."""
    rounds = 1
    while True:
        t0 = time.perf_counter()
        burn(rounds)
        took = time.perf_counter() - t0
        if took > 0.1:
            return max(1, round(rounds * seconds / took))
        rounds *= 2


async def timed_burn(rounds):
    t0 = time.perf_counter()
    burn(rounds)
    return time.perf_counter() - t0


# -- on the loop -------------------------------------------------------------------

def goloop_counters():
    """goloop's preemption counters (longest_step in ms); {} on other loops."""
    goloop = sys.modules.get("goloop")
    if goloop is None:
        return {}
    s = goloop.stats()
    return {
        "preemptions": s["preemptions"],
        "sysmon_wakeups": s["sysmon_wakeups"],
        "longest_step": s["longest_step"] * 1e3,
    }


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def tick_forever(period, ticks):
    while True:
        await asyncio.sleep(period)
        ticks.append(None)


async def idle_cpu(seconds, timer):
    timer_task = asyncio.create_task(tick_forever(0.1, [])) if timer else None
    await asyncio.sleep(0.3)   # past the start-up
    cpu0, wall0, before = cpu_seconds(), time.perf_counter(), goloop_counters()
    await asyncio.sleep(seconds)
    cpu1, wall1, after = cpu_seconds(), time.perf_counter(), goloop_counters()
    if timer_task:
        timer_task.cancel()
    metrics = {"cpu": 100 * (cpu1 - cpu0) / (wall1 - wall0)}
    if after:
        metrics["sysmon_wakeups"] = after["sysmon_wakeups"] - before["sysmon_wakeups"]
    return metrics


async def work_with_ticker(rounds):
    ticks = []
    tick_task = asyncio.create_task(tick_forever(0.001, ticks))
    await asyncio.sleep(0.01)
    ticks.clear()
    seconds = await timed_burn(rounds)
    tick_task.cancel()
    return {"ticks_per_s": len(ticks) / seconds, "seconds": seconds} | goloop_counters()


def on_off_ratio(rounds, pairs):
    """The same work alternately on a goloop loop that preempts and one that
    does not, each pair close in time: the fastest on over the fastest off."""
    new_goloop = loops.loop_factory("goloop")
    on, off = new_goloop(), new_goloop(preempt=False)
    took = {on: [], off: []}
    for i in range(pairs):
        for loop in (on, off) if i % 2 else (off, on):
            took[loop].append(loop.run_until_complete(timed_burn(rounds)))
    on.close()
    off.close()
    return {"on_off": min(took[on]) / min(took[off])}


# -- the fairness server, in a process of its own -------------------------------------

async def serve(heavy_rounds, lifetime):
    """Print the port, then serve for `lifetime` s at most."""

    async def handle(reader, writer):
        while line := await reader.readline():
            if line == b"heavy\n":
                burn(heavy_rounds)
            reply = json.dumps(goloop_counters()) if line == b"stats\n" else "ok"
            writer.write(reply.encode() + b"\n")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await asyncio.sleep(lifetime)


def start_server(loop_name, heavy_rounds, lifetime):
    return subprocess.Popen(
        [sys.executable, "-m", __name__, loop_name, str(heavy_rounds), str(lifetime)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )


def read_port(proc, timeout=30):
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError("the fairness server did not start")
    return int(line)


# -- the fairness clients ------------------------------------------------------------

def connect(port, timeout):
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request(sock, word):
    """Send one request line and return the reply line."""
    sock.sendall(word + b"\n")
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        reply += chunk
    return reply


def keep_busy(port, stop):
    """Heavy requests back to back until `stop`; the server is killed then."""
    try:
        with connect(port, timeout=30) as sock:
            while not stop.is_set():
                request(sock, b"heavy")
    except OSError:
        if not stop.is_set():
            raise


def start_heavy_clients(port, stop):
    threads = [threading.Thread(target=keep_busy, args=(port, stop)) for _ in range(HEAVY_CLIENTS)]
    for t in threads:
        t.start()
    return threads


def time_light_requests(sock, duration):
    """Round-trip times (ms) of light requests sent one at a time for `duration` s."""
    latencies = []
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        request(sock, b"light")
        latencies.append((time.perf_counter() - t0) * 1e3)
        time.sleep(LIGHT_PAUSE)
    return latencies


def percentile(values, p):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def light_latencies(loop_name, heavy_rounds, duration):
    """Light round trips (ms) while heavy requests compute, and goloop's counters."""
    stop, heavies = threading.Event(), []
    with start_server(loop_name, heavy_rounds, lifetime=duration + 60) as server:
        try:
            port = read_port(server)
            with connect(port, timeout=30) as sock:
                request(sock, b"light")   # connected and served before the heavy load
                heavies = start_heavy_clients(port, stop)
                time.sleep(0.2)           # the heavy requests are computing
                latencies = time_light_requests(sock, duration)
                # (only goloop has counters; asking another loop would wait for a heavy request)
                counters = json.loads(request(sock, b"stats")) if loop_name == "goloop" else {}
        finally:
            stop.set()
            server.kill()
    for t in heavies:
        t.join(timeout=5)
    return latencies, counters


# -- the workloads ---------------------------------------------------------------------

def fairness(loop_name, quick):
    heavy_rounds = rounds_for(size(1.0, 0.5, quick))
    ms, counters = light_latencies(loop_name, heavy_rounds, duration=size(3.0, 1.5, quick))
    return {
        "light_p99": percentile(ms, 99),
        "light_p50": percentile(ms, 50),
        "light_max": max(ms),
        "light_done": len(ms),
        **counters,
    }


def idle(timer):
    def run(loop_name, quick):
        return loops.run(loop_name, idle_cpu(size(2.0, 1.0, quick), timer))
    return run


def preemption_on_off(loop_name, quick):
    return on_off_ratio(rounds_for(size(0.1, 0.05, quick)), pairs=10 if not quick else 6)


async def executor_round_trips(count):
    async def computing(stop, rounds):
        while not stop.is_set():
            burn(rounds)
            await asyncio.sleep(0)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    hogs = [asyncio.create_task(computing(stop, rounds_for(0.05))) for _ in range(2)]
    await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    for _ in range(count):
        await loop.run_in_executor(None, int)
    took = time.perf_counter() - t0
    stop.set()
    await asyncio.gather(*hogs)
    return {"round_trip": took / count * 1e3}


def executor_hogs(loop_name, quick):
    return loops.run(loop_name, executor_round_trips(size(50, 20, quick)))


def work_ticker(loop_name, quick):
    return loops.run(loop_name, work_with_ticker(rounds_for(size(1.0, 0.5, quick))))


COUNTERS = (Metric("preemptions", "count"), Metric("sysmon_wakeups", "count"), Metric("longest_step", "ms"))
CPU = Metric("cpu", "% of a core")

WORKLOADS = [
    Workload("fairness: light p99 under heavy load", "preemption", fairness,
             (Metric("light_p99", "ms"), Metric("light_p50", "ms"), Metric("light_max", "ms"),
              Metric("light_done", "requests", higher_is_better=True)) + COUNTERS,
             note="fairness: heavy requests compute ~1 s each; target: goloop's light p99 <= 25 ms"),
    Workload("idle", "preemption", idle(timer=False), (CPU, Metric("sysmon_wakeups", "count")),
             note="idle: target goloop <= 1 % of a core (ratios of such small figures say little)"),
    Workload("preemption on/off", "preemption", preemption_on_off, (Metric("on_off", "ratio"),),
             loops=("goloop",),
             note="preemption on/off: goloop only, the same work with preemption on over off; target <= 1.03"),
]

EXTRA_WORKLOADS = [
    Workload("idle+timer", "preemption", idle(timer=True), (CPU, Metric("sysmon_wakeups", "count"))),
    Workload("work+ticker", "preemption", work_ticker,
             (Metric("ticks_per_s", "ticks/s", higher_is_better=True), Metric("seconds", "s")) + COUNTERS),
    Workload("executor+hogs", "preemption", executor_hogs, (Metric("round_trip", "ms"),)),
]


if __name__ == "__main__":      # the fairness server: loop heavy_rounds lifetime
    loops.run(sys.argv[1], serve(int(sys.argv[2]), float(sys.argv[3])))
