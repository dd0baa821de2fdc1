"""Probe: lost wake-ups — does every task finish, whatever preemption does?

    python stress_probe.py TIME_SLICE CERTFILE [--cycles N] [--tasks N] [--seed S]

Each cycle makes a new goloop loop and runs on it, with two CPU hogs
beside them that keep getting preempted, TASKS short-lived tasks of random
kinds:

  future   a Future resolved by call_soon / call_later / another thread
  sleep    asyncio.sleep of 0-2 ms, some computing before and after
  socket   a sock_sendall / sock_recv round trip over a socketpair
  tls      a TLS connection to a server on the same loop (127.0.0.1), one
           echo, then close
  resolve  getaddrinfo("localhost") in the default executor
  cancel   a task cancelled at a random point, or wait_for with a timeout
  burn     pure Python for 0.5-3 slices (preempted mid-way)

The cycles alternate how the loop is run: goloop.run(); a Runner whose
run() is called twice; run_until_complete() after a stop() from inside
run_forever(); and a run interrupted by KeyboardInterrupt raised from a
preempted hog's step, after which the loop runs again and must finish
every task.  A watchdog thread gives each cycle a deadline: on a hang it
prints every task's stack, the loop's ready and preempted queues and every
thread's stack, and exits with status 3.  On success, one JSON line.
"""
import argparse
import asyncio
import faulthandler
import json
import os
import random
import socket
import ssl
import sys
import threading
import time

import goloop
from probe_common import burn

ap = argparse.ArgumentParser()
ap.add_argument("time_slice", type=float)
ap.add_argument("certfile")
ap.add_argument("--cycles", type=int, default=8)
ap.add_argument("--tasks", type=int, default=300)
ap.add_argument("--seed", type=int, default=None)
ap.add_argument("--deadline", type=float, default=60.0)
ap.add_argument("--unsafe", action="store_true",
                help="the control: a loop that loses its preempted steps when an "
                     "exception comes out of one, as goloop once did")
ARGS = ap.parse_args()
SEED = ARGS.seed if ARGS.seed is not None else random.randrange(1 << 30)
SLICE = ARGS.time_slice


# ---- the watchdog ---------------------------------------------------------

class Watchdog:
    def __init__(self):
        self.loop = None
        self.deadline = None
        self.cycle = None
        self.lock = threading.Lock()
        threading.Thread(target=self.watch, daemon=True, name="watchdog").start()

    def arm(self, loop, cycle):
        with self.lock:
            self.loop, self.cycle = loop, cycle
            self.deadline = time.monotonic() + ARGS.deadline

    def disarm(self):
        with self.lock:
            self.deadline = None

    def watch(self):
        while True:
            time.sleep(0.5)
            with self.lock:
                late = self.deadline is not None and time.monotonic() > self.deadline
            if late:
                try:
                    self.report()
                finally:
                    os._exit(3)

    def report(self):
        out = sys.stderr
        loop = self.loop
        print(f"HANG in cycle {self.cycle} (seed {SEED}, slice {SLICE}); "
              f"ready={len(loop._ready)} scheduled={len(loop._scheduled)} "
              f"preempted={len(loop._preempted or ())}", file=out)
        for handle in list(loop._ready):
            print("  ready:", handle, file=out)
        for worker in list(loop._preempted or ()) + getattr(loop, "lost_preempted", []):
            print("  preempted worker:", worker, worker.frame, file=out)
        for task in list(asyncio.all_tasks(loop)):
            print(f"--- {task!r}", file=out)
            try:
                task.print_stack(file=out)
            except Exception as e:   # the loop thread may be mid-change
                print("  (stack unavailable:", e, ")", file=out)
        faulthandler.dump_traceback(file=out, all_threads=True)
        out.flush()


# ---- the task kinds -------------------------------------------------------

async def future_task(rng):
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    how = rng.randrange(3)
    if how == 0:
        loop.call_soon(fut.set_result, 1)
    elif how == 1:
        loop.call_later(rng.random() * 0.002, fut.set_result, 1)
    else:
        threading.Thread(target=loop.call_soon_threadsafe, args=(fut.set_result, 1)).start()
    return await fut


async def sleep_task(rng):
    burn(rng.random() * SLICE)
    await asyncio.sleep(rng.random() * 0.002)
    burn(rng.random() * SLICE)
    return 1


async def socket_task(rng):
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        payload = os.urandom(rng.randrange(1, 200_000))
        sender = asyncio.ensure_future(loop.sock_sendall(a, payload))
        got = bytearray()
        while len(got) < len(payload):
            got += await loop.sock_recv(b, 65536)
        await sender
        return int(bytes(got) == payload)
    finally:
        a.close()
        b.close()


async def tls_task(rng, server_port, client_ctx):
    reader, writer = await asyncio.open_connection("127.0.0.1", server_port, ssl=client_ctx,
                                                   server_hostname="localhost")
    try:
        line = b"x" * rng.randrange(1, 5000) + b"\n"
        writer.write(line)
        await writer.drain()
        echoed = await reader.readline()
        return int(echoed == line)
    finally:
        writer.close()
        await writer.wait_closed()


async def resolve_task(rng):
    infos = await asyncio.get_running_loop().getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)
    return int(bool(infos))


async def cancel_task(rng):
    async def victim():
        burn(rng.random() * 2 * SLICE)
        await asyncio.sleep(rng.random() * 0.005)
        burn(rng.random() * 2 * SLICE)
        await asyncio.sleep(1)

    if rng.randrange(2):
        t = asyncio.ensure_future(victim())
        await asyncio.sleep(rng.random() * 0.003)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            pass
    else:
        try:
            await asyncio.wait_for(victim(), rng.random() * 0.004)
        except asyncio.TimeoutError:
            pass
    return 1


async def burn_task(rng):
    burn((0.5 + rng.random() * 2.5) * SLICE)
    return 1


KINDS = ["future", "sleep", "socket", "tls", "resolve", "cancel", "burn"]


# ---- one cycle ------------------------------------------------------------

async def echo_client(reader, writer):
    try:
        line = await reader.readline()
        writer.write(line)
        await writer.drain()
    finally:
        writer.close()


class Interrupt(Exception):
    pass


async def hog(stop, burning, me, interrupt_at=None):
    """Burns 20 ms a step until stop; burning[me] is true while its step is
    inside a burn.  The one given interrupt_at raises KeyboardInterrupt out
    of a step that was preempted many times, and only once the other hog is
    inside a burn too: that one is then certainly preempted (only one step
    runs at a time), so the interrupt always finds a preempted step beside
    it -- the hazard the control (--unsafe) must lose, whatever the timing."""
    n = 0
    while not stop.is_set():
        burning[me] = True
        burn(0.02)
        burning[me] = False
        n += 1
        if interrupt_at is not None and n == interrupt_at:
            interrupt_at = None
            while not burning[1 - me] and not stop.is_set():
                burn(0.001)
            raise KeyboardInterrupt
        await asyncio.sleep(0)


async def workload(rng, counts, interrupt=False):
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(ARGS.certfile)
    client_ctx = ssl.create_default_context()
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    server = await asyncio.start_server(echo_client, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    burning = [False, False]
    hogs = [asyncio.ensure_future(hog(stop, burning, i, 3 if interrupt and i == 0 else None))
            for i in range(2)]
    try:
        tasks = []
        for _ in range(ARGS.tasks):
            kind = rng.choice(KINDS)
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "tls":
                coro = tls_task(rng, port, client_ctx)
            else:
                coro = globals()[f"{kind}_task"](rng)
            tasks.append(asyncio.ensure_future(coro))
            if rng.randrange(4) == 0:
                await asyncio.sleep(0)
        results = await asyncio.gather(*tasks)
        assert all(r == 1 for r in results), results
        return len(results)
    finally:
        # The interrupting hog raises while the other is preempted in a
        # burn; stopping the hogs first (a loaded machine finishes the tasks
        # before the hog's third step) would let it raise beside nothing.
        while interrupt and not hogs[0].done():
            await asyncio.sleep(0.001)
        stop.set()
        await asyncio.gather(*hogs, return_exceptions=True)
        server.close()
        await server.wait_closed()


def run_cycle(cycle, rng, watchdog, counts):
    how = cycle % 4
    if how == 0:
        async def main():
            watchdog.arm(asyncio.get_running_loop(), cycle)
            return await workload(rng, counts)

        done = goloop.run(main(), time_slice=SLICE)
    elif how == 1:
        with asyncio.Runner(loop_factory=lambda: goloop.new_event_loop(time_slice=SLICE)) as runner:
            watchdog.arm(runner.get_loop(), cycle)
            done = runner.run(workload(rng, counts))
            done += runner.run(workload(rng, counts))
    elif how == 2:
        loop = goloop.new_event_loop(time_slice=SLICE)
        try:
            watchdog.arm(loop, cycle)
            task = loop.create_task(workload(rng, counts))
            loop.call_later(0.01, loop.stop)
            loop.run_forever()             # stopped with steps in flight
            done = loop.run_until_complete(task)
        finally:
            loop.close()
    else:
        loop = goloop.new_event_loop(time_slice=SLICE)
        try:
            watchdog.arm(loop, cycle)
            task = loop.create_task(workload(rng, counts, interrupt=True))
            try:
                loop.run_until_complete(task)
                raise AssertionError("no KeyboardInterrupt came out of the loop")
            except KeyboardInterrupt:
                pass
            done = loop.run_until_complete(task)   # every other step resumes
        finally:
            loop.close()
    watchdog.disarm()
    return done


def losing_preempted_steps(loop):
    """The control: loop, made to lose the steps still preempted when an
    exception comes out of the loop's iteration (kept alive in
    loop.lost_preempted, never resumed) -- what goloop once did when a
    resumed step raised, and what the guarantee tested here excludes."""
    run_once = loop._run_once
    loop.lost_preempted = []

    def run_once_losing():
        try:
            run_once()
        except BaseException:
            loop.lost_preempted.extend(loop._preempted)
            loop._preempted.clear()
            raise

    loop._run_once = run_once_losing
    return loop


def main():
    if ARGS.unsafe:
        new_loop = goloop.new_event_loop
        goloop.new_event_loop = lambda **options: losing_preempted_steps(new_loop(**options))
    faulthandler.enable()
    watchdog = Watchdog()
    rng = random.Random(SEED)
    counts = {}
    before = goloop.stats()
    done = 0
    for cycle in range(ARGS.cycles):
        done += run_cycle(cycle, rng, watchdog, counts)
    after = goloop.stats()
    print(json.dumps({"seed": SEED, "tasks": done, "kinds": counts,
                      "preemptions": after["preemptions"] - before["preemptions"]}))


main()
