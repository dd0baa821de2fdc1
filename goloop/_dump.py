"""goloop.dump(): every task of every goloop loop in the process, where it is.

As Go prints every goroutine on SIGQUIT, and faulthandler every thread:

    goloop dump: pid=4242 loops=1 stacks_in_use=3 stacks_cached=2 stacks_mapped=5
    loop id=0x7f3a2c1d0e50 thread=MainThread running=yes tasks=4 preempted=1
      task name='hog' state=running step=1.204s stack=262144
        File "app.py", line 12, in main
          total += fib(30)
        ...
      task name='Task-3' state=preempted step=0.010s stack=262144
        ...
      task name='Task-4' state=await_ step=0.000s stack=262144 on=<Future pending ...>
      task name='Task-5' state=waiting on=<Future pending cb=[Task.task_wakeup()]>
        File "app.py", line 30, in handler
          data = await reader.read(100)
      task name='Task-6' state=ready
    end goloop dump

One header line; per loop a `loop` line, then a `task` line per unfinished
task, each followed by its Python stack, outermost call first, as in a
traceback: for a step in flight (running, preempted, waiting in await_())
the frames on its goroutine, from its coroutine up to where it stands; for
a task suspended at an await, its chain of awaiting coroutines.  Fields are
key=value, separated by single spaces; `name` is the task's name as repr()
prints it, and `on` (what a task waits for, its repr) comes last and runs to
the end of the line.  States:

    running    its step is executing now (on its loop's thread)
    preempted  its step was preempted and waits for its turn to go on
    await_     its step waits in goloop.await_() for `on`
    waiting    suspended at an await, for `on`
    ready      its next step is scheduled (or it has not started)

`step` is how long the step in flight has run, over all its stretches
(preempted and waiting time not counted); `stack` its goroutine's stack in
bytes.  Frames of a step running on another thread are that thread's
current frames (sys._current_frames()), read while it runs on: a snapshot
that may be a frame off.

GOLOOP_DUMP_SIGNAL (a signal's name or number: QUIT, SIGUSR1, 10) makes that
signal print the dump to stderr: a Python-level handler, installed from the
main thread at import, so it runs at the main thread's next bytecode
boundary — a thread stuck in C code for good prints nothing (faulthandler,
whose handler is C, does).  The signal no longer does what it did before
(SIGQUIT no longer ends the process).
"""
import os
import signal
import sys
import threading
import traceback
import weakref

from . import _goloop

LOOPS = weakref.WeakSet()   # every goloop EventLoop made (loop.py)

DUMP_SIGNAL_ENV = "GOLOOP_DUMP_SIGNAL"


def _tasks_of(loop):
    import asyncio

    try:
        return [t for t in asyncio.all_tasks(loop) if not t.done()]
    except RuntimeError:   # the task set changed size while read
        return []


def _task_of_handle(handle):
    callback = getattr(handle, "_callback", None)
    return getattr(callback, "__self__", None)


def _steps_in_flight():
    """task -> (state, seconds run, stack size, goroutine) of every step
    worker with a step in flight."""
    steps = {}
    for g in _goloop.goroutines():
        state = _goloop._step_state(g)
        if state is None:
            continue
        handle, what, ran, awaited = state
        task = _task_of_handle(handle)
        if task is not None:
            steps[task] = (what, ran, g.stack_size, g, awaited)
    return steps


def _frames_down_from(frame):
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    return frames


def _running_frames(loop, skip):
    """The frames of the step running on loop's thread, outermost first."""
    tid = getattr(loop, "_thread_id", None)
    if tid is None:
        return []
    if tid == threading.get_ident():
        frame = sys._getframe(skip)
    else:
        frame = sys._current_frames().get(tid)
    return _frames_down_from(frame)


def _awaiting_frames(coro):
    """The frames of the chain of coroutines that coro awaits through."""
    frames = []
    while coro is not None:
        frame = (getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                 or getattr(coro, "ag_frame", None))
        if frame is not None:
            frames.append(frame)
        coro = (getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
                or getattr(coro, "ag_await", None))
    return frames


def _format_frames(frames, indent):
    summary = traceback.StackSummary.extract(
        ((f, f.f_lineno) for f in frames), lookup_lines=True, capture_locals=False)
    lines = []
    for entry in summary.format():
        for line in entry.rstrip("\n").split("\n"):
            lines.append(indent + line.lstrip(" ") if line.startswith("  File") else indent + line)
    return lines


def _one_line(text):
    return " ".join(str(text).split())


def _task_lines(loop, task, steps, skip):
    state = steps.get(task)
    fields = [f"name={task.get_name()!r}"]
    on = None
    if state is not None:
        what, ran, stack, g, awaited = state
        fields += [f"state={what}", f"step={ran:.3f}s", f"stack={stack}"]
        if what == "running":
            frames = _running_frames(loop, skip)
        else:
            frames = _frames_down_from(g.frame)
        if what == "await_":
            on = getattr(task, "_fut_waiter", None)
            frames += _awaiting_frames(awaited)   # what the sync code awaits
    else:
        on = getattr(task, "_fut_waiter", None)
        fields.append("state=waiting" if on is not None else "state=ready")
        frames = _awaiting_frames(task.get_coro())
    if on is not None:
        fields.append(f"on={_one_line(repr(on))}")
    return ["  task " + " ".join(fields)] + _format_frames(frames, "    ")


def format_dump(skip=2):
    """The dump as a list of lines (see the module's docstring).  skip: how
    many frames below format_dump's caller's caller the running step's stack
    starts (2: dump()'s caller, when called by dump())."""
    stats = _goloop.stats()
    loops = [loop for loop in list(LOOPS) if not loop.is_closed()]
    lines = [
        f"goloop dump: pid={os.getpid()} loops={len(loops)} "
        f"stacks_in_use={stats['stacks_in_use']} stacks_cached={stats['stacks_cached']} "
        f"stacks_mapped={stats['stacks_mapped']}"
    ]
    steps = _steps_in_flight()
    threads = {t.ident: t.name for t in threading.enumerate()}
    for loop in loops:
        tasks = _tasks_of(loop)
        tid = getattr(loop, "_thread_id", None)
        preempted = len(getattr(loop, "_preempted", ()))
        lines.append(
            f"loop id={id(loop):#x} thread={threads.get(tid, '-') if tid else '-'} "
            f"running={'yes' if loop.is_running() else 'no'} tasks={len(tasks)} "
            f"preempted={preempted}"
        )
        for task in sorted(tasks, key=lambda t: t.get_name()):
            lines += _task_lines(loop, task, steps, skip + 2)
    lines.append("end goloop dump")
    return lines


def dump(file=None):
    """Print every task of every goloop loop in this process — its state,
    how long its step has run, its Python stack — to file (default
    sys.stderr).  The format is in README.md ("Goroutine dump")."""
    out = sys.stderr if file is None else file
    text = "\n".join(format_dump()) + "\n"
    out.write(text)
    flush = getattr(out, "flush", None)
    if flush is not None:
        flush()


def parse_signal(text):
    """GOLOOP_DUMP_SIGNAL's value -> a signal number; ValueError otherwise."""
    s = text.strip()
    if s.isdigit():
        num = int(s)
        valid = signal.valid_signals()
        if num not in valid:
            raise ValueError(f"{DUMP_SIGNAL_ENV}={text!r} is not a signal number")
        return _usable(num, text)
    name = s.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    num = getattr(signal, name, None)
    if not isinstance(num, signal.Signals) or name.startswith("SIG_"):
        raise ValueError(f"{DUMP_SIGNAL_ENV}={text!r} names no signal (QUIT, SIGUSR1, 10, ...)")
    return _usable(int(num), text)


def _usable(num, text):
    if num == signal.SIGURG:
        raise ValueError(f"{DUMP_SIGNAL_ENV}={text!r}: SIGURG is goloop's preemption signal")
    if num in (signal.SIGKILL, signal.SIGSTOP):
        raise ValueError(f"{DUMP_SIGNAL_ENV}={text!r}: {signal.Signals(num).name} cannot be caught")
    return num


def _on_dump_signal(signum, frame):
    # skip=2: format_dump's frame and this handler's, down to the frame
    # the signal interrupted.
    text = "\n".join(format_dump(skip=2)) + "\n"
    try:
        os.write(2, text.encode("utf-8", "backslashreplace"))
    except OSError:
        pass


def install_signal_from_env():
    text = os.environ.get(DUMP_SIGNAL_ENV)
    if not text:
        return
    num = parse_signal(text)
    if threading.current_thread() is not threading.main_thread():
        return   # signal handlers are set from the main thread only
    signal.signal(num, _on_dump_signal)
