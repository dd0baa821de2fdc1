"""HTTP workloads: a keep-alive HTTP/1.1 server on the loop under test, loaded by wrk.

The server (benchmarks.net_server LOOP http, protocol in
benchmarks.http_server) parses requests with httptools and answers each with
a small fixed response on the same connection: no task per request, so this
is the loop's transport and callback path under a realistic parser, as in
uvloop's HTTP benchmark.  It runs in a process of its own; the load
generator is wrk (Debian: apt-get install -y wrk), a C program with one
thread here (the server needs the other core), keeping 10 or 50
connections busy (1 among the EXTRA_WORKLOADS: -k HTTP), one request in
flight each (no pipelining), for 1 s -- wrk takes whole seconds only, so
--quick too -- after a short warm-up on one connection.  With the runner's
repetitions: ~1.2 min of a full run, ~13 s of --quick.

Metrics: requests_per_s (headline, wrk's), latency p50 and p99 (wrk
--latency), and the server's CPU time per request (as for the echo
workloads: /proc/PID/task/*/schedstat around wrk's run).

Without wrk the same workloads run with the echo workloads' Python clients
(benchmarks.net_client, forked processes, blocking sockets): requests/s and
server CPU only, and lower figures, since Python clients cost more CPU on the
cores the server shares; a line on stderr says so.
"""
import contextlib
import functools
import re
import shutil
import subprocess
import sys
import time

from benchmarks import http_server, net_client
from benchmarks.workload import Metric, Workload, size
from benchmarks.workloads.network import (
    REQUESTS_PER_S, SERVER_CPU, Timing, cpu_seconds, drive, rates, start_server,
)

CONNS = (10, 50)            # the regular workloads; EXTRA_CONNS run when -k selects them
EXTRA_CONNS = (1,)
MESSAGE = (http_server.REQUEST, len(http_server.RESPONSE))
LATENCY_P50 = Metric("latency_p50", "ms")
LATENCY_P99 = Metric("latency_p99", "ms")
TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}   # to milliseconds


def timing_for(quick):
    return Timing(warmup=size(0.25, 0.1, quick), window=size(1, 1, quick))


def warm_up(port, seconds):
    """Requests on one connection for `seconds`, from this process."""
    end = time.monotonic() + seconds
    with net_client.connect(port) as sock:
        net_client.run_connection(sock, MESSAGE, end, end)


def run_wrk(wrk, port, conns, seconds):
    argv = [wrk, "-t1", f"-c{conns}", f"-d{seconds}", "--latency", "--timeout", "5",
            f"http://127.0.0.1:{port}/"]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 30).stdout


def parse_wrk(output):
    """wrk's report as metrics (latencies in ms) and its request count."""
    requests = int(re.search(r"^\s*(\d+) requests in", output, re.M).group(1))
    latency = {
        pct: float(value) * TIME_UNITS[unit]
        for pct, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)$", output, re.M)
    }
    for problem in re.findall(r"^\s*(Socket errors:.*|Non-2xx or 3xx responses:.*)$", output, re.M):
        print(f"wrk: {problem}", file=sys.stderr)
    metrics = {
        REQUESTS_PER_S.name: float(re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M).group(1)),
        LATENCY_P50.name: latency["50"],
        LATENCY_P99.name: latency["99"],
    }
    return metrics, requests


def measure_with_wrk(wrk, server, port, conns, timing):
    warm_up(port, timing.warmup)
    cpu0 = cpu_seconds(server.pid)
    metrics, requests = parse_wrk(run_wrk(wrk, port, conns, timing.window))
    cpu = cpu_seconds(server.pid) - cpu0
    return {**metrics, SERVER_CPU.name: cpu / requests * 1e6}


def measure_http(conns, loop_name, quick):
    if http_server.httptools is None:
        raise RuntimeError("the HTTP workloads need httptools: pip install httptools")
    timing = timing_for(quick)
    wrk = shutil.which("wrk")
    with contextlib.ExitStack() as stack:
        server, port = start_server(stack, loop_name, "http", timing)
        if wrk:
            return measure_with_wrk(wrk, server, port, conns, timing)
        print("wrk not found (apt-get install -y wrk): HTTP load from Python clients, "
              "no latency percentiles", file=sys.stderr)
        return rates(*drive(stack, server, port, MESSAGE, conns, timing), timing.window)


def http_workload(conns):
    return Workload(
        name=f"HTTP keep-alive x{conns}",
        group="http",
        run=functools.partial(measure_http, conns),
        metrics=(REQUESTS_PER_S, LATENCY_P50, LATENCY_P99, SERVER_CPU),
        note="httptools parser, 13-byte body, server in its own process; load: wrk -t1 -cN "
             "(Python clients when wrk is missing)",
    )


WORKLOADS = [http_workload(conns) for conns in CONNS]
EXTRA_WORKLOADS = [http_workload(conns) for conns in EXTRA_CONNS]
