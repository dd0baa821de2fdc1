"""What the process-model tests (test_process_models.py) run in their child
interpreters, and what those children's own children run.

It is a module, not code pasted into `python -c`, because multiprocessing's
"spawn" start method finds a child's target by importing it by name: the
spawned interpreter imports `process_targets` (sys.path travels with the
spawn) and unpickles `workout_to_pipe` from it.

Each `scenario_*` function is a whole scenario, run as the main program of a
fresh interpreter (the test runs `python -c` through `run_python`), so that
a fork copies that interpreter and not pytest's: its result is one JSON
object, which the test prints and checks.  Nothing here asserts: the tests
do, with the same checks on goloop and on stock asyncio.

The pieces:

- `workout()`: a loop's worth of real work — a socketpair echo through
  `loop.sock_*`, a `call_later` timer, ten gathered tasks, and a CPU hog
  beside a ticker (the ticker's gaps show whether the loop preempted the
  hog; goloop's preemption counter whether goloop did);
- the children that run a *new* loop with `workout()` in a forked or spawned
  process and hand the result back (a Queue, a Pipe, an os.pipe);
- the parents, whose loop keeps running while the child works and is still
  usable afterwards.
"""
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import traceback
import warnings

import goloop
from apps_helpers import GOLOOP, TIME_SLICE, burn_cpu, run

HOG = 1.0            # seconds a hog burns: well past LIGHT_LATENCY_LIMIT (0.6 s),
                     # so a loop that does not preempt shows a gap of at least this
TICK = 0.005         # the ticker's sleep
WAIT_LIMIT = 30.0    # any wait for another process or thread: a hang fails
GATHERED = 10        # tasks in the gather: their results sum to 45


# --- the work every loop does ------------------------------------------------

def preemptions():
    """goloop's process-wide count of preempted steps (0 with stock asyncio,
    which never preempts)."""
    return goloop.stats()["preemptions"]


async def socket_echo():
    """A message through a socketpair and back, uppercased by an echo task:
    the loop's readers and writers work."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        theirs.setblocking(False)

        async def echo_upper():
            data = await loop.sock_recv(theirs, 1024)
            await loop.sock_sendall(theirs, data.upper())

        echo = asyncio.create_task(echo_upper())
        await loop.sock_sendall(ours, f"ping from {os.getpid()}".encode())
        reply = await loop.sock_recv(ours, 1024)
        await echo
        return reply.decode()


async def timer_delay(delay=0.05):
    """How long a call_later(delay) took to fire, in seconds."""
    loop = asyncio.get_running_loop()
    fired = loop.create_future()
    started = time.perf_counter()
    loop.call_later(delay, fired.set_result, None)
    await fired
    return time.perf_counter() - started


async def gathered_tasks():
    """The sum of GATHERED tasks' results (each sleeps a little first)."""
    async def value_after_sleep(i):
        await asyncio.sleep(0.001 * i)
        return i

    return sum(await asyncio.gather(*(value_after_sleep(i) for i in range(GATHERED))))


async def hog_beside_ticker(seconds=HOG):
    """A task burning the CPU for `seconds` beside a task ticking every TICK:
    the ticker's gaps (seconds) and how many preemptions goloop made
    meanwhile.  On a loop that preempts, the gaps stay near TICK; on one
    that does not, one gap is the whole burn."""
    done = False
    gaps = []

    async def ticker():
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async def hog():
        nonlocal done
        try:
            return burn_cpu(seconds)
        finally:
            done = True

    before = preemptions()
    ticking = asyncio.create_task(ticker())
    rounds = await asyncio.create_task(hog())
    await ticking
    return {"gaps": gaps, "preemptions": preemptions() - before, "rounds": rounds}


async def workout():
    """All of the above on the running loop; a JSON-able report."""
    return {
        "pid": os.getpid(),
        "loop": type(asyncio.get_running_loop()).__module__,
        "echo": await socket_echo(),
        "timer_delay": await timer_delay(),
        "gathered": await gathered_tasks(),
        "hog": await hog_beside_ticker(),
    }


def run_fresh(kind, main):
    """Run main() on a new loop of `kind` through the entry point a program
    would use: goloop.run() or asyncio.run()."""
    if kind == GOLOOP:
        return goloop.run(main(), time_slice=TIME_SLICE)
    return asyncio.run(main())


def running_loop_seen():
    """What asyncio.get_running_loop() says here: a fork child must not
    see the parent's loop (asyncio's at-fork hook resets it)."""
    try:
        return type(asyncio.get_running_loop()).__module__
    except RuntimeError:
        return None


def sigurg_handler():
    """The name of this process's SIGURG handler: SIG_DFL in a fresh
    interpreter; a fork child inherits the parent's (goloop's _on_sigurg
    while a goloop loop ran there)."""
    handler = signal.getsignal(signal.SIGURG)
    return getattr(handler, "name", None) or getattr(handler, "__name__", repr(handler))


def error_report():
    """A child's report of its own failure: the traceback, for the test."""
    return {"error": traceback.format_exc()}


async def within(seconds, awaitable):
    """await `awaitable`, failing with TimeoutError after `seconds`."""
    async with asyncio.timeout(seconds):
        return await awaitable


# --- multiprocessing children ---------------------------------------------------

def workout_to_queue(kind, queue):
    """The fork child's target: run workout() on a new loop of `kind` and
    put the report (with what the child saw before starting its loop: a
    running loop? which SIGURG handler?) on `queue`."""
    try:
        report = {"running_loop_at_start": running_loop_seen(),
                  "sigurg_handler_at_start": sigurg_handler()}
        report["workout"] = run(kind, workout)
    except BaseException:
        report = error_report()
    queue.put(report)


def workout_to_pipe(kind, conn):
    """The spawn child's target: as workout_to_queue, through a Pipe."""
    try:
        report = {"running_loop_at_start": running_loop_seen(),
                  "sigurg_handler_at_start": sigurg_handler(),
                  "parent_pid": os.getppid(),
                  "workout": run(kind, workout)}
    except BaseException:
        report = error_report()
    conn.send(report)
    conn.close()


async def ticks_while(awaitable):
    """(awaitable's result, how many TICKs the loop ran meanwhile): the
    parent's loop keeps going while it waits for its child."""
    ticks = 0
    waiting = asyncio.ensure_future(awaitable)
    while not waiting.done():
        await asyncio.sleep(TICK)
        ticks += 1
    return waiting.result(), ticks


# --- scenario 1 and 2: multiprocessing, fork and spawn ---------------------------

async def parent_with_fork_child(kind):
    """Start a multiprocessing "fork" child from inside a task of the running
    loop; await its report through a Queue (in the default executor, so the
    loop runs on); then work on this loop again."""
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=workout_to_queue, args=(kind, queue))
    child.start()                                  # fork() inside this task's step
    report, ticks = await ticks_while(loop.run_in_executor(None, queue.get, True, WAIT_LIMIT))
    await within(WAIT_LIMIT, loop.run_in_executor(None, child.join, WAIT_LIMIT))
    return {"child": report, "child_exitcode": child.exitcode, "child_pid": child.pid,
            "parent_pid": os.getpid(), "parent_ticks_while_waiting": ticks,
            "parent_after": await workout()}


async def parent_with_spawn_child(kind):
    """As parent_with_fork_child, with the "spawn" start method: the child
    is a new interpreter that imports goloop afresh."""
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=workout_to_pipe, args=(kind, theirs))
    child.start()
    theirs.close()

    def receive():
        if not ours.poll(WAIT_LIMIT):
            raise TimeoutError(f"no report from the spawned child in {WAIT_LIMIT} s")
        return ours.recv()

    report, ticks = await ticks_while(loop.run_in_executor(None, receive))
    await within(WAIT_LIMIT, loop.run_in_executor(None, child.join, WAIT_LIMIT))
    return {"child": report, "child_exitcode": child.exitcode, "child_pid": child.pid,
            "parent_pid": os.getpid(), "parent_ticks_while_waiting": ticks,
            "parent_after": await workout()}


def scenario_multiprocessing(kind, method):
    """Scenario 1 ("fork") or 2 ("spawn"): the parent's loop is `kind`."""
    parent = parent_with_fork_child if method == "fork" else parent_with_spawn_child

    async def main():
        return await within(2 * WAIT_LIMIT, parent(kind))

    return run(kind, main)


# --- scenario 3: os.fork() inside a task ------------------------------------------

async def counting_hog(seconds, progress):
    """burn_cpu for `seconds`, counting rounds in progress["rounds"] as it
    goes, so that a fork child can tell whether the parent's hog ever ran
    there."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(i * i for i in range(200))
        progress["rounds"] += 1


async def wait_for_gate(gate, i):
    """A task suspended until `gate` is set (holding no goroutine on goloop)."""
    await gate.wait()
    return i


def fork_child_works(kind, report_fd, hog_progress):
    """In the child of os.fork(): run a new loop with real work and write a
    JSON report to report_fd; the exit status (0 or 1) says whether it all
    ran.  The child sits inside the parent's task step (on goloop: on that
    step's goroutine, among the parent's parked ones) and never returns to
    the parent's loop."""
    try:
        report = {"running_loop_at_start": running_loop_seen()}
        rounds_before = hog_progress["rounds"]
        report["workout"] = run_fresh(kind, workout)
        # The parent's hog, parked mid-step on goloop at the fork, must stay
        # parked here: only the parent may resume its goroutines.
        report["parent_hog_rounds_in_child"] = hog_progress["rounds"] - rounds_before
        status = 0
    except BaseException:
        report, status = error_report(), 1
    data = json.dumps(report).encode()
    while data:
        data = data[os.write(report_fd, data):]
    return status


async def reap(pid):
    """Wait for child `pid` without blocking the loop: os.waitpid with
    WNOHANG between short sleeps; (exit status, ticks the loop ran
    meanwhile).  SIGKILLs the child after WAIT_LIMIT."""
    deadline = time.monotonic() + WAIT_LIMIT
    ticks = 0
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), ticks
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"fork child {pid} still running after {WAIT_LIMIT} s")
        await asyncio.sleep(0.01)
        ticks += 1


def read_all(fd):
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


async def parent_forking_in_a_task(kind):
    """os.fork() in a task step while 50 other tasks are suspended and a hog
    has just started (on goloop its step is preempted at the fork: a parked
    goroutine in mid-step); then the parent carries on."""
    gate = asyncio.Event()
    waiters = [asyncio.create_task(wait_for_gate(gate, i)) for i in range(50)]
    hog_progress = {"rounds": 0}
    hog = asyncio.create_task(counting_hog(HOG, hog_progress))
    await asyncio.sleep(0.05)
    hog_running_at_fork = not hog.done()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os._exit(fork_child_works(kind, write_end, hog_progress))
    os.close(write_end)
    status, ticks = await reap(pid)
    report = json.loads(read_all(read_end) or b"{}")
    gate.set()
    released = await within(WAIT_LIMIT, asyncio.gather(*waiters))
    await within(WAIT_LIMIT, hog)
    return {"child": report, "child_status": status, "child_pid": pid,
            "parent_pid": os.getpid(), "parent_ticks_while_waiting": ticks,
            "hog_running_at_fork": hog_running_at_fork,
            "parent_hog_rounds": hog_progress["rounds"],
            "released": released, "parent_after": await workout()}


def scenario_os_fork(kind):
    """Scenario 3: the parent's loop is `kind`, and so is the child's."""
    async def main():
        return await within(2 * WAIT_LIMIT, parent_forking_in_a_task(kind))

    return run(kind, main)


def scenario_fork_warnings(kind):
    """The warnings os.fork() gives when called from a task of a running
    loop, and from plain code once that loop has closed (Python 3.12+ warns
    when it sees the process has more than one thread)."""
    def fork_and_reap():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pid = os.fork()
            if pid == 0:
                os._exit(0)
        os.waitpid(pid, 0)
        return [f"{w.category.__name__}: {w.message}" for w in caught]

    async def main():
        return fork_and_reap()

    return {"in_task": run(kind, main), "after_loop": fork_and_reap(),
            "threads": len(os.listdir("/proc/self/task"))}


def scenario_foreign_sigurg_in_fork_child(kind):
    """A fork child (of a fork made in a task) runs a new loop whose task
    sends SIGURG to its own process, as the kernel does for a socket's
    out-of-band data: SIGURG's default action is to ignore it, so the loop
    must simply go on.  The child inherits goloop's handler from the
    parent's running loop, and its own loop must not take that inherited
    handler for the one to pass foreign SIGURGs to (it would call itself)."""
    async def child_main():
        # Three, each in a step of its own: one that lands while sysmon has
        # a preemption request out (a step past its slice, on a loaded
        # machine) folds into that request, as goloop's README says; all
        # three will not.
        for _ in range(3):
            os.kill(os.getpid(), signal.SIGURG)
            await asyncio.sleep(0.005)
        return "loop went on"

    async def main():
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            try:
                outcome = run_fresh(kind, child_main)
            except BaseException as e:
                outcome = f"{type(e).__name__}: {e}"
            os.write(write_end, outcome.encode())
            os._exit(0)
        os.close(write_end)
        status, _ = await reap(pid)
        return {"child": read_all(read_end).decode(), "child_status": status}

    return run(kind, main)


# --- scenario 4: a loop in a thread beside the main thread's --------------------

async def thread_side(main_loop, handoff):
    """The thread's loop: an uppercasing echo server, a timer, calls into
    the main loop both ways; runs until the main thread sets `stop`."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    served = asyncio.Event()
    inbox = []

    async def echo_upper(reader, writer):
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.close()
        await writer.wait_closed()
        served.set()

    server = await asyncio.start_server(echo_upper, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    handoff.set_result((loop, port, stop, inbox))     # a concurrent Future: thread-safe
    # thread -> main: a coroutine run on the main loop, awaited here.
    doubled = await within(WAIT_LIMIT, asyncio.wrap_future(
        asyncio.run_coroutine_threadsafe(on_main_loop_double(21), main_loop)))
    # thread -> main: a plain callback, answered by one back into this loop.
    answer = loop.create_future()
    main_loop.call_soon_threadsafe(answer_from_main, loop, answer)
    answered = await within(WAIT_LIMIT, answer)
    delay = await timer_delay()
    await within(WAIT_LIMIT, stop.wait())
    # The connection's handler ends once the main loop's client has closed;
    # before 3.12 server.wait_closed() does not wait for it.
    await within(WAIT_LIMIT, served.wait())
    server.close()
    await server.wait_closed()
    return {"thread": threading.current_thread().name, "loop": type(loop).__module__,
            "doubled": doubled, "answered": answered, "timer_delay": delay,
            "inbox": inbox}


async def on_main_loop_double(x):
    await asyncio.sleep(0.01)
    return [x * 2, threading.current_thread() is threading.main_thread()]


def answer_from_main(thread_loop, future):
    """Runs on the main loop; resolves `future` on the thread's loop."""
    where = threading.current_thread() is threading.main_thread()
    thread_loop.call_soon_threadsafe(future.set_result, f"main thread: {where}")


async def on_thread_loop_square(x):
    await asyncio.sleep(0.01)
    return [x * x, threading.current_thread().name]


async def echo_round_trips(port, count):
    """`count` lines through the thread loop's echo server; the replies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = []
    for i in range(count):
        writer.write(f"line {i}\n".encode())
        await writer.drain()
        replies.append((await reader.readline()).decode().strip())
        await asyncio.sleep(0.01)
    writer.close()
    await writer.wait_closed()
    return replies


def scenario_two_loops(kind):
    """Scenario 4: a loop of `kind` in the main thread and one in a thread,
    at once; the warnings goloop gives for the thread's loop."""
    outcome = {}

    def thread_main(main_loop, handoff):
        try:
            outcome["thread"] = run(kind, thread_side, main_loop, handoff)
        except BaseException:
            outcome["thread"] = error_report()
            if not handoff.done():
                handoff.set_exception(RuntimeError("the thread's loop failed"))

    async def main_side():
        main_loop = asyncio.get_running_loop()
        handoff = concurrent.futures.Future()
        thread = threading.Thread(target=thread_main, args=(main_loop, handoff), name="loop-thread")
        thread.start()
        thread_loop, port, stop, inbox = await within(WAIT_LIMIT, asyncio.wrap_future(handoff))
        # main -> thread: a coroutine on the thread's loop, and a callback.
        squared = await within(WAIT_LIMIT, asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(on_thread_loop_square(7), thread_loop)))
        thread_loop.call_soon_threadsafe(
            lambda: inbox.append(f"from main, run on {threading.current_thread().name}"))
        # Sockets to the thread's loop while this loop also runs a hog
        # beside a ticker: preemption of the main loop, with the other on.
        replies, hog = await within(WAIT_LIMIT, asyncio.gather(
            echo_round_trips(port, 20), hog_beside_ticker()))
        thread_loop.call_soon_threadsafe(stop.set)
        await within(WAIT_LIMIT, main_loop.run_in_executor(None, thread.join, WAIT_LIMIT))
        return {"squared": squared, "replies": replies, "hog": hog,
                "thread_alive": thread.is_alive()}

    with warnings.catch_warnings(record=True) as caught:
        # Warnings are process-wide state until 3.14: this also records
        # what the thread's loop warns.
        warnings.simplefilter("always")
        outcome["main"] = run(kind, main_side)
    outcome["warnings"] = [[w.category.__name__, str(w.message)] for w in caught]
    return outcome


def main():
    """python -c "import process_targets; process_targets.main()" SCENARIO ARGS...:
    run one scenario and print its JSON report as the last line."""
    name, *args = sys.argv[1:]
    print(json.dumps(globals()[f"scenario_{name}"](*args)), flush=True)
