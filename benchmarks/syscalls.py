"""System calls per echo request in the steady state, counted by strace.

    python -m benchmarks.syscalls                            # goloop, every server kind, 1 KiB
    python -m benchmarks.syscalls --loop all                 # goloop, uvloop, asyncio (rloop too if installed)
    python -m benchmarks.syscalls --loop uvloop --kind protocol --size 10240

For each (loop, kind): the echo server of benchmarks.net_server on that loop
in a process of its own (started as the echo workloads start it), and a
client in this process (benchmarks.net_client: blocking sockets, one request
in flight per connection) that warms it up for a second (--warmup).  Then
`strace -f -c -p PID` attaches to every thread of the server, the client
makes --requests requests (10,000 by default), all of them answered, and
strace detaches (SIGINT) and writes how many times each system call was
made.  Divided by the requests: the system calls of one request in the
steady state, without start-up, accept, TLS handshake or exit.  Kinds: sock,
streams, protocol, buffered (benchmarks.net_server) and tls (the streams
server over TLS, as in the "echo streams TLS" workloads; not on rloop).

The table gives per request: poll (epoll_wait, epoll_pwait, epoll_pwait2,
and poll/select kin), read (read, readv, recvfrom, recvmsg), write (write,
writev, sendto, sendmsg), mmap, munmap, mremap, brk, epoll_ctl, futex and the
rest; under it every system call of each row by name ("failed": calls that
returned an error, EAGAIN mostly).  A row fails its check when

  - mmap, munmap and mremap together exceed 1 per 1,000 requests: a steady
    state maps no memory, and one a request is a buffer of glibc's mmap
    threshold (128 KiB, pinned: see below) or more allocated and freed per
    request -- asyncio's transports read max_size, 256 KiB, at once;
  - read-type or write-type calls exceed one per request (plus the same
    1/1,000 for strays, e.g. strace interrupting a wait as it attaches):
    what a 1 KiB request needs.  (Big messages take several reads by
    nature: with --size 100000 the check says so.)

What the figures are not: strace stops the server twice per system call,
so it runs several times slower than untraced, and what depends on timing
comes out as at that pace: whether the client's next request is already
there when the server looks (if not, a sock_recv costs a failed recv, an
epoll_ctl and a poll more), whether goloop skips a poll while work is ready
(time-based: 100 us), the sysmon wake-ups and preemptions (futex, tgkill)
of goloop's slowed steps.  What a transport does per read and write (the
checks) does not depend on it.

The servers run with glibc's mmap threshold pinned at its initial 128 KiB
(GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072), which also stops glibc
from raising it to the size of any mapped block freed whole.  Unpinned,
whether a 256 KiB read buffer is mapped depends on what the process freed
before -- here, even on whether PYTHONPATH was set: the same goloop server
mapped per request in one process and not in another.  Pinned, every
allocation of 128 KiB or more per request shows, in every process.

The exit status is 1 when a checked row fails, with a line saying why.  With
--loop all, goloop's rows are the ones checked; the other loops are the
yardstick, their failures shown but not counted.  strace must be installed
(Debian: apt-get install -y strace) and allowed to attach to a process that
is not its child (root, or kernel.yama.ptrace_scope 0).
"""
import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks import loops, net_client, report
from benchmarks.workloads import network

WARMUP = 1.0               # seconds of requests before strace attaches (default of --warmup)
TRACE_TIMEOUT = 120.0      # seconds the traced part may take (strace slows the server down)
ATTACH_TIMEOUT = 10.0      # seconds for strace to attach to every thread
SLACK = 0.001              # calls per request allowed beyond the limits: strays
ALL_LOOPS = ("goloop", "uvloop", "asyncio", "rloop")   # --loop all, those installed
CHECKED_UNDER_ALL = ("goloop",)
PINNED_MALLOC = "glibc.malloc.mmap_threshold=131072"    # glibc's initial threshold, no longer dynamic

# --kind: (net_server kind, over TLS), in table order
KINDS = {kind: (kind, False) for kind in network.KINDS}
KINDS["tls"] = ("streams", True)

POLL = ("epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "select", "pselect6")
READ = ("read", "readv", "recvfrom", "recvmsg", "recvmmsg")
WRITE = ("write", "writev", "sendto", "sendmsg", "sendmmsg")
MAPS = ("mmap", "munmap", "mremap")
COLUMNS = {"poll": POLL, "read": READ, "write": WRITE, "mmap": ("mmap",), "munmap": ("munmap",),
           "mremap": ("mremap",), "brk": ("brk",), "epoll_ctl": ("epoll_ctl",), "futex": ("futex",)}


# -- strace ------------------------------------------------------------------------

def traced_threads(pid, tracer):
    """Whether every thread of process pid is traced by process tracer."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for tid in tids:
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{tid}/status") as f:
            tracer_line = next(line for line in f if line.startswith("TracerPid:"))
            if int(tracer_line.split()[1]) != tracer:
                return False
    return True


def attach(stack, strace, pid, out):
    """Start `strace -f -c -p pid` writing its counts to out; returns once every thread is traced."""
    proc = stack.enter_context(subprocess.Popen([strace, "-f", "-c", "-o", out, "-p", str(pid)],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    stack.callback(network.kill, proc)
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while not traced_threads(pid, proc.pid):
        if proc.poll() is not None or time.monotonic() > deadline:
            network.kill(proc)
            raise SystemExit(f"strace could not attach to the server (pid {pid}): {proc.stderr.read().strip()}\n"
                             "It needs the right to trace a process that is not its child: root, or "
                             "kernel.yama.ptrace_scope = 0.")
        time.sleep(0.01)
    return proc


def detach(proc):
    """Stop strace (it detaches and writes its summary)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise SystemExit("strace did not exit 30 s after SIGINT") from None


def parse_summary(text):
    """strace -c's table as {name: (calls, errors)}."""
    calls = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[-1] == "total" or not fields[0].replace(".", "").isdigit():
            continue
        numbers = fields[:-1]        # % time, seconds, usecs/call, calls[, errors]
        calls[fields[-1]] = (int(numbers[3]), int(numbers[4]) if len(numbers) > 4 else 0)
    return calls


# -- the client ------------------------------------------------------------------------

def on_every_connection(socks, work):
    """work(sock, i) on every connection at once (threads, as net_client.client)."""
    with ThreadPoolExecutor(len(socks)) as pool:
        list(pool.map(work, socks, range(len(socks))))


def make_requests(socks, message, count):
    """count requests spread over the connections, one in flight on each; all answered on return."""
    request, reply_size = message

    def requests(sock, i):
        view = memoryview(bytearray(reply_size))
        for _ in range(count // len(socks) + (i < count % len(socks))):
            net_client.exchange(sock, request, view)

    on_every_connection(socks, requests)


# -- one (loop, kind) ----------------------------------------------------------------

def count_syscalls(strace, loop_name, kind, size, conns, requests, warmup):
    """{syscall: (calls, errors)} of the server over `requests` requests after `warmup` seconds of them."""
    server_kind, tls = KINDS[kind]
    message = (b"x" * size, size)
    timing = network.Timing(warmup=warmup, window=TRACE_TIMEOUT)     # bounds the server's life
    with contextlib.ExitStack() as stack:
        certfile = stack.enter_context(network.self_signed_certificate()) if tls else None
        tunables = ":".join(filter(None, [os.environ.get("GLIBC_TUNABLES"), PINNED_MALLOC]))
        env = dict(os.environ, GLIBC_TUNABLES=tunables)
        server, port = network.start_server(stack, loop_name, server_kind, timing, certfile, env)
        socks = [stack.enter_context(net_client.connect(port, tls)) for _ in range(conns)]
        end = time.monotonic() + warmup
        on_every_connection(socks, lambda sock, i: net_client.run_connection(sock, message, end, end))
        out = os.path.join(stack.enter_context(tempfile.TemporaryDirectory(prefix="goloop-strace-")), "counts")
        tracer = attach(stack, strace, server.pid, out)
        make_requests(socks, message, requests)
        time.sleep(0.05)                 # the server is back in its wait for the next request
        detach(tracer)
        with open(out) as f:
            return parse_summary(f.read())


def per_request(calls, requests):
    return {name: n / requests for name, (n, _) in calls.items()}


def problems(rates):
    """Why a row fails its check (empty: it passes)."""
    found = []
    maps = sum(rates.get(name, 0) for name in MAPS)
    if maps > SLACK:
        found.append(f"{fmt(maps)} mmap/munmap/mremap per request (limit {SLACK:g}): memory mapped and "
                     "unmapped in the steady state, a buffer of 128 KiB or more (glibc's mmap threshold) "
                     "allocated per request")
    for what, names in (("read", READ), ("write", WRITE)):
        rate = sum(rates.get(name, 0) for name in names)
        if rate > 1 + SLACK:
            found.append(f"{fmt(rate)} {what}-type calls per request (limit 1: {', '.join(names)})")
    return found


# -- output ----------------------------------------------------------------------------

def fmt(rate):
    if rate == 0:
        return "0"
    return f"{rate:.2f}" if rate >= 0.01 else f"{rate:.4f}"


def server_label(kind):
    server_kind, tls = KINDS[kind]
    return network.KINDS[server_kind] + (" TLS" if tls else "")


def table_row(loop_name, kind, rates, failed):
    grouped = [sum(rates.get(name, 0) for name in names) for names in COLUMNS.values()]
    other = sum(rate for name, rate in rates.items() if not any(name in names for names in COLUMNS.values()))
    return [loop_name, server_label(kind), *map(fmt, grouped), fmt(other), fmt(sum(rates.values())),
            "FAIL" if failed else "ok"]


def by_name(calls, requests):
    items = sorted(calls.items(), key=lambda item: (-item[1][0], item[0]))
    return ", ".join(f"{name} {fmt(n / requests)}" + (f" ({fmt(errors / requests)} failed)" if errors else "")
                     for name, (n, errors) in items)


# -- main ------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.syscalls", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--loop", default="goloop", choices=(*loops.LOOPS, "all"),
                    help="the loop (default goloop); all: goloop, uvloop, asyncio and rloop, those installed")
    ap.add_argument("--kind", default="all", choices=(*KINDS, "all"), help="the echo server (default all)")
    ap.add_argument("--size", type=int, default=1024, help="bytes per message (default 1024)")
    ap.add_argument("--requests", type=int, default=10_000, help="requests traced (default 10,000)")
    ap.add_argument("--conns", type=int, default=1, help="connections, one request in flight each (default 1)")
    ap.add_argument("--warmup", type=float, default=WARMUP, help=f"seconds of requests before strace attaches "
                    f"(default {WARMUP:g})")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    strace = shutil.which("strace")
    if not strace:
        raise SystemExit("strace is not installed (Debian: apt-get update && apt-get install -y strace)")
    if args.size < 1 or args.requests < 1 or args.conns < 1:
        raise SystemExit("--size, --requests and --conns must be at least 1")
    if args.loop == "all":
        loop_names, checked = [name for name in ALL_LOOPS if loops.is_available(name)], CHECKED_UNDER_ALL
    elif not loops.is_available(args.loop):
        raise SystemExit(f"{args.loop} is not installed (pip install {args.loop}, or pip install .[bench])")
    else:
        loop_names, checked = [args.loop], (args.loop,)
    kinds = list(KINDS) if args.kind == "all" else [args.kind]
    version = subprocess.run([strace, "-V"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"System calls per request in the steady state: {args.requests:,} requests of {args.size:,} bytes on "
          f"{args.conns} connection(s), after {args.warmup:g} s of warm-up; servers with "
          f"GLIBC_TUNABLES={PINNED_MALLOC}; {version}, Python {sys.version.split()[0]}, loops "
          f"{', '.join(f'{n} {loops.version(n)}' for n in loop_names)}\n",
          flush=True)
    rows, details, failures, skipped = [], [], [], []
    for kind in kinds:
        for loop_name in loop_names:
            label = f"{loop_name} {server_label(kind)}"
            if KINDS[kind][1] and loop_name not in network.TLS_LOOPS:
                skipped.append(f"{label}: not run ({loop_name} has no TLS server)")
                continue
            calls = count_syscalls(strace, loop_name, kind, args.size, args.conns, args.requests, args.warmup)
            rates = per_request(calls, args.requests)
            found = problems(rates)
            rows.append(table_row(loop_name, kind, rates, found))
            details.append(f"- {label}: {by_name(calls, args.requests)}")
            print(f"{label}: {'FAIL' if found else 'ok'}", file=sys.stderr, flush=True)
            failures += [(loop_name in checked, f"{label}: {why}") for why in found]
    if rows:
        print(report.table(["loop", "server", *COLUMNS, "other", "all", "check"], rows))
        print("\npoll: " + ", ".join(POLL) + "; read: " + ", ".join(READ) + "; write: " + ", ".join(WRITE)
              + ".  Per request, every system call:\n")
        print("\n".join(details))
    if skipped:
        print("\n".join(skipped))
    for counted, line in failures:
        print(f"{'FAIL' if counted else 'fails too (yardstick, not checked)'} {line}")
    return 1 if any(counted for counted, _ in failures) else 0


if __name__ == "__main__":
    sys.exit(main())
