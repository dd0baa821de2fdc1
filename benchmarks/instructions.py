"""Instructions per unit of loop work, counted by callgrind: the repeatable
speed figure on a noisy machine (wall-clock rows move by 30 % between runs;
instruction counts by about 1 %).

    python -m benchmarks.instructions                  # every workload, every loop installed
    python -m benchmarks.instructions -k sleep0 --loops goloop,rloop

Each (workload, loop) runs twice under `valgrind --tool=callgrind`, with N
and with N + 10,000 units; the figure is the difference divided by 10,000,
so start-up, imports and teardown cancel out.  Loop kinds: asyncio, uvloop,
rloop, goloop (its defaults), goloop-nopreempt (preempt=False), goloop-nogo
(goroutines=False).  goloop's poll skipping is time-based (100 µs), and
valgrind runs ~50x slower than the machine, so goloop polls more often under
valgrind than it does for real: its counts are a little pessimistic.

Workloads (one unit each):
    sleep0      a task's `await asyncio.sleep(0)`: one step, one iteration
    call_soon   a loop.call_soon() of a no-op and its run, 4 bursts of N/4
    timers      a call_later() of the timers workload (half cancelled, the
                other half run), all scheduled in one callback
    queue       a round trip of the Queue ping-pong (two puts, two gets)
    gather      a trivial task of asyncio.gather()
    connect     a connection to a Protocol echo server: accepted, 100 bytes
                echoed, closed by the client (a process of its own, not
                counted); 200 and 1,200 connections instead of N
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

BASE_N = 2000
EXTRA_N = 10000

# The program each run executes: argv = kind, workload, n.
PROGRAM = r'''
import asyncio, sys
kind, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

async def sleep0():
    for _ in range(n):
        await asyncio.sleep(0)

async def timers():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    ran = [0]
    def tick():
        ran[0] += 1
        if ran[0] == n // 2:
            done.set_result(None)
    def schedule():
        handles = [loop.call_later((i % 1000) * 1e-6, tick) for i in range(n)]
        for h in handles[1::2]:
            h.cancel()
    loop.call_soon(schedule)
    await done

async def queue():
    a, b = asyncio.Queue(), asyncio.Queue()
    async def pong():
        for _ in range(n):
            await b.put(await a.get())
    t = asyncio.create_task(pong())
    for i in range(n):
        await a.put(i)
        await b.get()
    await t

CLIENT = """
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"x" * 100)
    got = 0
    while got < 100:
        got += len(s.recv(100))
    s.close()
"""

async def connect():
    import subprocess
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    lost = [0]
    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
        def data_received(self, data):
            self.transport.write(data)
        def connection_lost(self, exc):
            lost[0] += 1
            if lost[0] == n:
                done.set_result(None)
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    client = subprocess.Popen([sys.executable, "-c", CLIENT,
                               str(server.sockets[0].getsockname()[1]), str(n)])
    await done
    client.wait()
    server.close()
    await server.wait_closed()

async def gather():
    async def nothing():
        return 1
    await asyncio.gather(*(nothing() for _ in range(n)))

def new_loop():
    if kind == "asyncio":
        return asyncio.new_event_loop()
    if kind == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    if kind == "rloop":
        import rloop
        return rloop.new_event_loop()
    import goloop
    options = {"goloop-nopreempt": {"preempt": False},
               "goloop-nogo": {"goroutines": False}}.get(kind, {})
    return goloop.new_event_loop(**options)

loop = new_loop()
if work == "call_soon":
    def nothing():
        pass
    for _ in range(4):
        for _ in range(n // 4):
            loop.call_soon(nothing)
        loop.call_soon(loop.stop)
        loop.run_forever()
else:
    loop.run_until_complete({"sleep0": sleep0, "timers": timers, "queue": queue,
                             "gather": gather, "connect": connect}[work]())
loop.close()
'''

WORKLOADS = ["sleep0", "call_soon", "timers", "queue", "gather", "connect"]
# (base, extra) units where N and 10,000 more would take too long under valgrind
UNITS = {"connect": (200, 1000)}
KINDS = ["asyncio", "uvloop", "rloop", "goloop", "goloop-nopreempt", "goloop-nogo"]
MODULE = {"uvloop": "uvloop", "rloop": "rloop"}


def installed(kind):
    module = MODULE.get(kind)
    if module is None:
        return True
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True)
    return probe.returncode == 0


def count(program, kind, work, n):
    """Instructions callgrind counted for one run (an exception if it failed)."""
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out",
             sys.executable, program, kind, work, str(n)],
            capture_output=True, text=True)
    m = re.search(r"Collected : (\d+)", r.stderr)
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"{kind} {work} n={n} failed:\n{r.stderr[-2000:]}")
    return int(m.group(1))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", action="append", choices=WORKLOADS, help="a workload (repeatable)")
    parser.add_argument("--loops", help="comma-separated, of " + ",".join(KINDS))
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    kinds = args.loops.split(",") if args.loops else KINDS
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        sys.exit(f"unknown loop kind(s): {', '.join(unknown)}; known: {', '.join(KINDS)}")
    kinds = [k for k in kinds if installed(k)]
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(PROGRAM)
        program = f.name
    try:
        print(f"instructions per unit (callgrind; N={BASE_N + EXTRA_N} minus N={BASE_N}; "
              + "; ".join(f"{w}: {b + e} minus {b}" for w, (b, e) in UNITS.items())
              + f"), Python {sys.version.split()[0]}")
        for work in args.k or WORKLOADS:
            base, extra = UNITS.get(work, (BASE_N, EXTRA_N))
            cells = []
            for kind in kinds:
                per = (count(program, kind, work, base + extra)
                       - count(program, kind, work, base)) / extra
                cells.append(f"{kind} {per:,.0f}")
            print(f"  {work:10} " + "  ".join(cells), flush=True)
    finally:
        os.unlink(program)


if __name__ == "__main__":
    main()
