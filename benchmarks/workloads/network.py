"""TCP echo workloads: uvloop's echo methodology, server and clients in separate processes.

The echo server (benchmarks.net_server) runs on the loop under test in a
fresh interpreter of its own; the load comes from other processes
(benchmarks.net_client.client, forked from this one: a fork costs a
millisecond, a fresh interpreter tens) over loopback, each connection with
plain blocking sockets and TCP_NODELAY, sending a message and waiting for
the whole echo before sending the next.  One client process per connection,
as uvloop's benchmark does (beyond MAX_CLIENT_PROCS a process drives several
connections on threads): against a uvloop server, 10 connections from 10
processes gave a steady ~50k req/s here, from one process on 10 threads
38-48k.  What the numbers mean on this 2-core machine: the server and its
clients share the cores, so requests/s is the whole system's rate and
counts the clients' cost too; the server's CPU time per request is the
loop's own cost and the cleaner comparison between loops.

Server variants (see benchmarks.net_server): the sock_* API (a task per
connection on sock_recv/sock_sendall), streams (start_server, reader/writer),
Protocol (data_received -> transport.write) and BufferedProtocol
(get_buffer/buffer_updated).  Messages of 1, 10 and 100 KiB; 1 and 10
concurrent connections: 24 combinations, each run for a fixed window after a
warm-up (timing_for: 1 s, --quick 0.5 s).  The runner repeats every run
(5 times; --quick once), each paying ~0.55 s for two fresh interpreters
(its child and the server): all 24 at 5 repetitions would take ~14 min of
the full run's 15, so the 8 combinations of CORE get the 5 repetitions and
the other 16 (FULL_WORKLOADS) at most EXTRA_REPS (~3.6 min); --quick runs
CORE only (-k echo selects all 24).

TLS (TLS_CORE, with CORE in every run; -k TLS selects them): the streams
server over TLS, 1 KiB on 1 and 10 connections (~1.2 min of a full run,
~13 s of --quick).  The server gets an ssl.SSLContext (the ssl module's
server defaults: TLS 1.3) with a self-signed RSA 2048 certificate for
localhost, made for each run by `openssl req` in a temporary directory
(the bench extra has no `cryptography`); the clients are the same
processes with the ssl module's blocking sockets, handshaking as they
connect, before the warm-up.  So the window holds only requests: the
loop's TLS transport (asyncio's SSL protocol on goloop and asyncio,
uvloop's own) encrypting and decrypting 1 KiB records.  Not on rloop,
whose create_server has no TLS (NotImplementedError).

Connection rate (CONNECT_CORE, with CORE in every run, --quick too; -k
connect selects them): the Protocol server, 1 KiB on 1 and 10 client
connections that each open a new connection for every request (connect,
send, read the whole echo, close: benchmarks.net_client's reconnect), ~1.2
min of a full run.  Every accepted connection costs the loop its accept
path, the protocol's and transport's creation and their teardown at the
client's close -- work the keep-alive echo rows never see past their
warm-up.  Metrics: connections_per_s and server_cpu_per_conn, measured as
the echo rows' (a connection is a request here).  The clients' TIME_WAIT
sockets bound a run (see benchmarks.net_client): 28,232 ephemeral ports
within 60 s, ~22k connections/s over the 1.25 s of warm-up and window,
about twice the fastest rate measured here (~12k/s).

Metrics: requests_per_s (headline; requests started by the clients within
the window / window), and server_cpu_per_req: the server process's CPU time
(user + system, all its threads: /proc/PID/task/*/schedstat, ns precision)
over the same window, per request.

Every process started here is bounded in time (the server exits at end of
its stdin or after a deadline, clients at the window's end or a socket
timeout) and killed on the way out, errors included.
"""
import contextlib
import functools
import multiprocessing
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from benchmarks import ROOT, net_client
from benchmarks.workload import Metric, Workload, size

MAX_CLIENT_PROCS = 10
EXTRA_REPS = 2             # repetitions of the combinations outside CORE
STARTUP_TIMEOUT = 30.0     # seconds for a server or client to say it is ready
FORK = multiprocessing.get_context("fork")   # clients: this process's code, no fresh interpreter


@dataclass(frozen=True)
class Timing:
    warmup: float          # seconds of load before the window, not counted
    window: float          # seconds measured


def timing_for(quick):
    return Timing(warmup=size(0.25, 0.1, quick), window=size(1.0, 0.5, quick))


KINDS = {"sock": "sock_*", "streams": "streams", "protocol": "Protocol", "buffered": "BufferedProtocol"}
SIZES_KIB = (1, 10, 100)
CONNS = (1, 10)
CORE = {                   # (kind, KiB, connections) run by default
    ("protocol", 1, 1), ("protocol", 1, 10), ("protocol", 100, 1),
    ("streams", 1, 1), ("streams", 1, 10),
    ("sock", 1, 1), ("sock", 1, 10),
    ("buffered", 1, 1),
}
TLS_CORE = {("streams", 1, 1), ("streams", 1, 10)}   # run over TLS too, as often as CORE
TLS_LOOPS = ("asyncio", "uvloop", "goloop")          # rloop's create_server has no TLS

REQUESTS_PER_S = Metric("requests_per_s", "req/s", higher_is_better=True)
SERVER_CPU = Metric("server_cpu_per_req", "µs")
CONNECT_CORE = {("protocol", 1, 1), ("protocol", 1, 10)}   # a new connection per request, as often as CORE
CONNECTIONS_PER_S = Metric("connections_per_s", "conn/s", higher_is_better=True)
SERVER_CPU_PER_CONN = Metric("server_cpu_per_conn", "µs")
ECHO_METRICS = (REQUESTS_PER_S, SERVER_CPU)
CONNECT_METRICS = (CONNECTIONS_PER_S, SERVER_CPU_PER_CONN)


# -- processes --------------------------------------------------------------

def start_server(stack, loop_name, kind, timing, certfile=None, env=None):
    """Start benchmarks.net_server in a fresh interpreter; (process, port) once it listens.

    With certfile (see self_signed_certificate) it serves over TLS; env
    replaces this process's environment.  stack kills and reaps it on exit."""
    lifetime = STARTUP_TIMEOUT + timing.warmup + timing.window + 30
    argv = [sys.executable, "-m", "benchmarks.net_server", loop_name, kind, "--max-seconds", str(lifetime)]
    argv += ["--tls", certfile] if certfile else []
    proc = stack.enter_context(subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    stack.callback(kill, proc)        # runs before Popen.__exit__ closes the pipes and waits
    ready, _, _ = select.select([proc.stdout], [], [], STARTUP_TIMEOUT)
    line = proc.stdout.readline() if ready else b""
    if not line:
        kill(proc)
        raise RuntimeError(f"{' '.join(argv[2:])}: no port (exit status {proc.wait()})")
    return proc, int(line)


def kill(proc):
    if proc.poll() is None:
        proc.kill()


def start_clients(stack, port, message, conns, tls=False, reconnect=False):
    """Fork the client processes (benchmarks.net_client.client) for conns connections.

    One process per connection up to MAX_CLIENT_PROCS, then several
    connections per process, over TLS if tls, a new one per request if
    reconnect; returns (process, pipe) pairs.
    stack kills and reaps them on exit."""
    procs = min(conns, MAX_CLIENT_PROCS)
    clients = []
    for i in range(procs):
        share = conns // procs + (i < conns % procs)
        pipe, child_pipe = FORK.Pipe()
        proc = FORK.Process(target=net_client.client, args=(port, message, share, child_pipe, tls, reconnect),
                            daemon=True)
        proc.start()
        stack.callback(stop_client, proc)
        child_pipe.close()
        clients.append((proc, pipe))
    return clients


def stop_client(proc):
    proc.kill()
    proc.join()


def receive(client, timeout):
    """The next thing a client process sends, within timeout seconds."""
    proc, pipe = client
    with contextlib.suppress(EOFError):
        if pipe.poll(timeout):
            return pipe.recv()
    raise RuntimeError(f"a client process failed (exit code {proc.exitcode})")


def cpu_seconds(pid):
    """CPU time (user + system) of every thread of process pid, in seconds."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


def sleep_until(t):
    time.sleep(max(0.0, t - time.monotonic()))


@contextlib.contextmanager
def self_signed_certificate():
    """The path of a PEM file with a new RSA 2048 key and a self-signed
    certificate for localhost, in a temporary directory removed on exit."""
    openssl = shutil.which("openssl")
    if not openssl:
        raise RuntimeError("the TLS workloads make their certificate with the openssl command: "
                           "apt-get install -y openssl")
    with tempfile.TemporaryDirectory(prefix="goloop-bench-tls-") as tmp:
        key, cert, both = (os.path.join(tmp, name) for name in ("key.pem", "cert.pem", "server.pem"))
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=localhost"],
                       check=True, capture_output=True, timeout=STARTUP_TIMEOUT)
        with open(both, "w") as out:
            for part in (key, cert):
                with open(part) as f:
                    out.write(f.read())
        yield both


# -- measuring --------------------------------------------------------------

def drive(stack, server, port, message, conns, timing, tls=False, reconnect=False):
    """Load server with conns client connections (TLS ones if tls, a new one
    per request if reconnect); returns (requests in the window, server CPU seconds)."""
    clients = start_clients(stack, port, message, conns, tls, reconnect)
    for client in clients:
        receive(client, STARTUP_TIMEOUT)                 # "ready": connected
    t0 = time.monotonic() + timing.warmup
    t1 = t0 + timing.window
    for _, pipe in clients:
        pipe.send((t0, t1))
    sleep_until(t0)
    cpu0 = cpu_seconds(server.pid)
    sleep_until(t1)
    cpu1 = cpu_seconds(server.pid)
    requests = sum(receive(client, net_client.TIMEOUT) for client in clients)
    return requests, cpu1 - cpu0


def rates(requests, cpu, window, metrics=ECHO_METRICS):
    """The metrics every network workload reports: (rate, server CPU per
    request) under the names of metrics."""
    if not requests:
        raise RuntimeError("no request completed in the window")
    rate, cpu_per = metrics
    return {rate.name: requests / window, cpu_per.name: cpu / requests * 1e6}


def measure_echo(kind, nbytes, conns, loop_name, quick, tls=False, reconnect=False, metrics=ECHO_METRICS):
    timing = timing_for(quick)
    with contextlib.ExitStack() as stack:
        certfile = stack.enter_context(self_signed_certificate()) if tls else None
        server, port = start_server(stack, loop_name, kind, timing, certfile)
        requests, cpu = drive(stack, server, port, (b"x" * nbytes, nbytes), conns, timing, tls, reconnect)
    return rates(requests, cpu, timing.window, metrics)


ECHO_NOTE = ("TCP echo: the server on the loop in a process of its own, blocking clients in others "
             "(one per connection); xN: N connections, one request in flight each; the "
             f"combinations other than {len(CORE)} core ones are medians of at most {EXTRA_REPS} runs")
TLS_NOTE = ("TLS: the streams echo server with an ssl.SSLContext (TLS 1.3, AES-256-GCM, self-signed RSA 2048 "
            "certificate), clients on the ssl module's blocking sockets, handshakes before the window; "
            "not on rloop (no TLS server)")


CONNECT_NOTE = ("connect: the Protocol echo server, each client connection a new one per request (connect, "
                "1 KiB there and back, close): the rate and server CPU are per connection")


def echo_workload(kind, size_kib, conns, max_reps=0, tls=False, reconnect=False):
    metrics = CONNECT_METRICS if reconnect else ECHO_METRICS
    return Workload(
        name=f"{'connect' if reconnect else 'echo'} {KINDS[kind]}{' TLS' if tls else ''} {size_kib} KiB x{conns}",
        group="network",
        run=functools.partial(measure_echo, kind, size_kib * 1024, conns, tls=tls, reconnect=reconnect,
                              metrics=metrics),
        metrics=metrics,
        loops=TLS_LOOPS if tls else Workload.loops,
        note=CONNECT_NOTE if reconnect else TLS_NOTE if tls else ECHO_NOTE,
        max_reps=max_reps,
    )


COMBINATIONS = [(kind, size_kib, conns) for kind in KINDS for size_kib in SIZES_KIB for conns in CONNS]
WORKLOADS = ([echo_workload(*c) for c in COMBINATIONS if c in CORE]
             + [echo_workload(*c, tls=True) for c in COMBINATIONS if c in TLS_CORE]
             + [echo_workload(*c, reconnect=True) for c in COMBINATIONS if c in CONNECT_CORE])
FULL_WORKLOADS = [echo_workload(*c, max_reps=EXTRA_REPS) for c in COMBINATIONS if c not in CORE]
