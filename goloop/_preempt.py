"""Preemption of CPU-bound task steps: the Python side.

A task step that runs past its time slice is parked at a bytecode boundary
and put at the back of the loop's ready queue; the loop runs timers, I/O
and other tasks, and resumes it in turn.  The machinery is native:

  csrc/runtime/sysmon.c   the monitor thread that notices a step running
                          past its slice (Go's sysmon);
  csrc/cpython/preempt.c  the SIGURG handler that parks the step, and which
                          steps it may park;
  csrc/cpython/steps.c    workers whose steps can be parked and resumed.

This module holds what is policy rather than mechanism: the options and
their defaults (time_slice, preempt, GOLOOP_TIME_SLICE), goloop.atomic(),
which modules are never interrupted, and `running(loop)`, which arms
preemption for as long as a loop runs — SIGURG handler installed (the
previous one is still called for SIGURGs goloop did not ask for), sysmon
attached, and the selector's select() marking when the loop blocks for
I/O, so that sysmon sleeps meanwhile.

Only the main thread runs Python signal handlers, so only a loop on the
main thread is preempted; a loop on another thread warns once and runs its
steps cooperatively, as stock asyncio does.
"""
import asyncio
import contextlib
import contextvars
import functools
import inspect
import math
import os
import signal
import sys
import threading
import warnings

from . import _goloop, _locks

DEFAULT_TIME_SLICE = 0.010     # Go's forcePreemptNS
MIN_TIME_SLICE = 50e-6         # below sysmon's resolution it means nothing
TIME_SLICE_ENV = "GOLOOP_TIME_SLICE"
# What the slice measures: "wall" (default) or "cpu", the loop thread's CPU
# time — see slice_counts_cpu_time().
SLICE_CLOCK_ENV = "GOLOOP_SLICE_CLOCK"

# The frames a task step starts from: asyncio's Handle._run and, for the
# pure-Python Task, its __step (and, 3.12+, __step_run_and_handle_result).
STEP_BASE = tuple(
    f.__code__
    for f in (
        asyncio.events.Handle._run,
        asyncio.tasks._PyTask._Task__step,
        getattr(asyncio.tasks._PyTask, "_Task__step_run_and_handle_result", None),
    )
    if f is not None
)
# No frame of these modules may sit above the step's base: one there means
# asyncio is in the middle of something — scheduling a callback, notifying
# waiters, calling an exception handler, starting an eager task — and its
# state is consistent only once it returns.
BASE_ONLY = ("asyncio", "goloop")
# Never interrupted while any frame is in these: the import system.  While a
# module body runs, its import lock is held in Python fields (the owner's
# thread id), not in a lock object that goloop counts (_locks.py), and
# another task of the same thread importing the module would be let in and
# see it half made.  (Threading locks need no list: a step holding one is
# never preempted, whichever module took it.)
NEVER_PREEMPT = ("importlib._bootstrap", "importlib._bootstrap_external")


class PreemptionWarning(RuntimeWarning):
    """A loop that asked for preemption runs cooperatively (not the main
    thread)."""


_inside_atomic = contextvars.ContextVar("goloop.atomic", default=False)


class atomic:
    """Code that must not be preempted: a context manager and a decorator.

        with goloop.atomic():
            ...                      # runs to its end, however long it takes

        @goloop.atomic()             # or @goloop.atomic
        def transfer(a, b): ...

    Decorating a coroutine function protects its code between awaits (an
    await still lets other tasks run, as always).  Nesting is fine."""

    def __new__(cls, func=None):
        self = super().__new__(cls)
        self._tokens = []
        return self(func) if func is not None else self

    def __enter__(self):
        self._tokens.append(_inside_atomic.set(True))
        return self

    def __exit__(self, *exc_info):
        _inside_atomic.reset(self._tokens.pop())
        return False

    def __call__(self, func):
        if not callable(func):
            raise TypeError(f"goloop.atomic() decorates a callable, not {type(func).__name__}")
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def atomic_coroutine(*args, **kwargs):
                with atomic():
                    return await func(*args, **kwargs)
            return atomic_coroutine

        @functools.wraps(func)
        def atomic_function(*args, **kwargs):
            with atomic():
                return func(*args, **kwargs)
        return atomic_function


def check_time_slice(value, source="time_slice"):
    """Seconds as a float; TypeError/ValueError as asyncio's checks raise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{source} must be a number of seconds, not {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or not (MIN_TIME_SLICE <= value <= 3600):
        raise ValueError(f"{source} must be between {MIN_TIME_SLICE} and 3600 seconds, got {value!r}")
    return value


def parse_time_slice(text):
    """GOLOOP_TIME_SLICE: seconds ('0.01'), or with a unit: '10ms', '200us', '1s'."""
    s = text.strip().lower()
    for unit, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        if s.endswith(unit):
            s, mult = s[: -len(unit)], scale
            break
    else:
        mult = 1.0
    try:
        seconds = float(s) * mult
    except ValueError:
        raise ValueError(f"{TIME_SLICE_ENV}={text!r} is not a duration (seconds, or with us/ms/s)") from None
    return check_time_slice(seconds, f"{TIME_SLICE_ENV}={text!r}")


def default_time_slice():
    text = os.environ.get(TIME_SLICE_ENV)
    return parse_time_slice(text) if text else DEFAULT_TIME_SLICE


def slice_counts_cpu_time():
    """GOLOOP_SLICE_CLOCK=cpu: a step is preempted once the loop's thread
    has had a slice of CPU time since the step began, rather than once a
    slice of wall time has passed.  Wall time is the default: what the
    other tasks of the loop wait for is wall time, whether the step
    computes or its thread waits for a CPU; the cpu clock keeps a step that
    the machine's load descheduled from being preempted for it, at a
    system call per step (the thread's CPU clock is not in the vDSO)."""
    text = os.environ.get(SLICE_CLOCK_ENV, "wall").strip().lower()
    if text not in ("wall", "cpu"):
        raise ValueError(f"{SLICE_CLOCK_ENV}={text!r}: expected 'wall' or 'cpu'")
    return text == "cpu"


_warned_thread = False


def _warn_not_main_thread():
    global _warned_thread
    if not _warned_thread:
        _warned_thread = True
        warnings.warn(
            "goloop preempts only a loop running on the main thread (CPython runs signal "
            f"handlers there only); this loop on {threading.current_thread().name!r} runs "
            "task steps cooperatively",
            PreemptionWarning,
            stacklevel=5,
        )


def _mark_polls(selector):
    """Make selector.select() tell sysmon when it blocks; returns the undo."""
    select = selector.select
    poll_enter, poll_exit = _goloop._poll_enter, _goloop._poll_exit

    def marked_select(timeout=None):
        if timeout is not None and timeout <= 0:
            return select(timeout)
        poll_enter()
        try:
            return select(timeout)
        finally:
            poll_exit()

    try:
        selector.select = marked_select
    except (AttributeError, TypeError):
        return lambda: None

    def undo():
        if selector.__dict__.get("select") is marked_select:
            del selector.select
    return undo


@contextlib.contextmanager
def running(loop):
    """Preempt loop's long task steps while the with-block runs it."""
    if not (loop._preempt and loop._goroutines) or asyncio._get_running_loop() is not None:
        yield   # (a loop already running here: run_forever raises as usual)
        return
    if threading.current_thread() is not threading.main_thread():
        _warn_not_main_thread()
        yield
        return
    if loop._time_slice is None:
        loop._time_slice = default_time_slice()
    previous = signal.signal(signal.SIGURG, _goloop._on_sigurg)
    signal.siginterrupt(signal.SIGURG, False)   # SA_RESTART: see preempt.c
    # A SIGURG that is not sysmon's goes to the handler found here, unless
    # that is ours already: a child forked while its parent's loop ran
    # inherits it, and forwarding to ourselves would recurse until
    # RecursionError.  What was there before ours is not known then, so
    # such a SIGURG gets SIGURG's default: ignored.
    forward = signal.SIG_DFL if previous is _goloop._on_sigurg else previous
    try:
        _goloop._preempt_attach(loop._time_slice, forward, slice_counts_cpu_time())
    except BaseException:
        signal.signal(signal.SIGURG, previous)
        raise
    selector = getattr(loop, "_selector", None)
    unmark = _mark_polls(selector) if selector is not None else (lambda: None)
    try:
        yield
    finally:
        unmark()
        _goloop._preempt_detach()
        # Put back what was there, unless the application replaced ours.
        if signal.getsignal(signal.SIGURG) is _goloop._on_sigurg:
            signal.signal(signal.SIGURG, previous if previous is not None else signal.SIG_DFL)


def _task_switchers():
    """The (enter, leave) pair a preempted step's task is left and entered
    again with.  asyncio.tasks._enter_task/_leave_task are the C ones when
    _asyncio is there; up to 3.13 they keep every Task's state in one dict.
    From 3.14 the C ones keep the running task in the thread state, and the
    pure-Python Task enters itself with the _py_ ones (a dict): each Task
    must be left by the kind that entered it, or the C _leave_task refuses a
    pure-Python Task and its steps are never preempted."""
    tasks = asyncio.tasks
    if sys.version_info < (3, 14) or tasks._enter_task is tasks._py_enter_task:
        return tasks._enter_task, tasks._leave_task
    py_task = tasks._PyTask

    def enter(loop, task):
        (tasks._py_enter_task if isinstance(task, py_task) else tasks._enter_task)(loop, task)

    def leave(loop, task):
        (tasks._py_leave_task if isinstance(task, py_task) else tasks._leave_task)(loop, task)

    return enter, leave


_goloop._setup_preempt(_inside_atomic, *_task_switchers(), STEP_BASE, BASE_ONLY, NEVER_PREEMPT)
# No thread of goloop's runs at a fork: CPython 3.12+ would warn that the
# process is multi-threaded (sysmon.c).  The child starts sysmon afresh with
# its first loop.
os.register_at_fork(before=_goloop._sysmon_pause, after_in_parent=_goloop._sysmon_resume)
_locks.track_all()
