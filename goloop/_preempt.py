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
which modules are never interrupted, which files are library code (only the
application's own code is preempted: is_library_file), and `running(loop)`,
which arms
preemption for as long as a loop runs — SIGURG handler installed (the
previous one is still called for SIGURGs goloop did not ask for), sysmon
attached, and the selector's select() marking when the loop blocks for
I/O, so that sysmon sleeps meanwhile.

A loop on the main thread is reached by SIGURG and the Python-level
handler; a loop on another thread (CPython runs signal handlers on the main
thread only) by a pending call that its thread runs at its next bytecode
boundary (3.12+: preempt.c says why and how).  On 3.11, whose pending calls
too run on the main thread only, by a trace function that goloop's tracer
thread installs on it (_start_tracer below; preempt.c).  A build that could
do neither would run such a loop's steps cooperatively and warn once if
preemption was asked for (_warn_not_main_thread; a default loop does not).
"""
import asyncio
import atexit
import contextlib
import contextvars
import dis
import functools
import inspect
import math
import os
import signal
import site
import sys
import sysconfig
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


# Only the application's own code is preempted, never a library's: a
# library's coroutine relies on nothing else running between two of its
# awaits (preempt.c says what broke when that was not so).  Library code is
# a file of the standard library or of an installed package; an application
# that is itself installed into site-packages names its top-level packages
# here, or with preemptible_packages().
PREEMPTIBLE_PACKAGES_ENV = "GOLOOP_PREEMPTIBLE_PACKAGES"


def _library_roots():
    """The directories library code lives in, each ending with a separator:
    the standard library and every site- or dist-packages directory of this
    interpreter and of the one its virtualenv was made from."""
    roots = set()
    for scheme_vars in (None, {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}):
        paths = sysconfig.get_paths(vars=scheme_vars)
        roots.update(paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib"))
    if hasattr(site, "getsitepackages"):
        roots.update(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        roots.add(site.getusersitepackages())
    # Debian's interpreters import packages from .../dist-packages, which
    # the schemes above do not all name.
    roots.update(p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages"))
    # Longest first: site-packages sits inside the standard library's
    # directory, and a package's name is what follows the innermost root.
    return tuple(sorted({os.path.join(os.path.realpath(r), "") for r in roots if r},
                        key=len, reverse=True))


_roots = None
_preemptible_packages = frozenset(
    name.strip() for name in os.environ.get(PREEMPTIBLE_PACKAGES_ENV, "").split(",") if name.strip())
# Every file's answer, by co_filename; preempt.c reads and fills it.
_library_files = {}


def _find_library_roots():
    """_roots, found once: by running() as a loop starts, rather than inside
    the SIGURG handler, where the first question would otherwise find them
    (sysconfig takes a few milliseconds)."""
    global _roots
    if _roots is None:
        _roots = _library_roots()
    return _roots


def _main_file():
    """The real path of the script being run (__main__), or None."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return os.path.realpath(main_file) if isinstance(main_file, str) else None


def is_library_file(filename):
    """Is the code in filename a library's (not preempted) rather than the
    application's?  The script being run is the application's wherever it
    lives (`python -m myapp.server` of an installed package); frozen modules
    are the standard library's; other pseudo-files (<string>, <stdin>, code
    made by exec) are the application's."""
    if filename.startswith("<"):
        return filename.startswith("<frozen ")
    path = os.path.realpath(filename)
    if path == _main_file():
        return False
    for root in _roots or _find_library_roots():
        if path.startswith(root):
            top = path[len(root):].split(os.sep, 1)[0]
            return os.path.splitext(top)[0] not in _preemptible_packages
    return False


_await_offsets = {}


def awaits_at(code, lasti):
    """Is the instruction at byte offset lasti of code an await (SEND, which
    await, async for and async with compile to, 3.11+)?  f_lasti may point
    into the instruction's inline cache entries (3.11, 3.12), so each SEND
    covers the offsets up to the next instruction.  Asked by preempt.c only
    for a library's coroutine frame below the innermost one."""
    offsets = _await_offsets.get(code)
    if offsets is None:
        instructions = list(dis.get_instructions(code))
        ends = [i.offset for i in instructions[1:]] + [len(code.co_code)]
        offsets = frozenset(
            offset
            for instruction, end in zip(instructions, ends) if instruction.opname == "SEND"
            for offset in range(instruction.offset, end))
        _await_offsets[code] = offsets
    return lasti in offsets


def preemptible_packages(*names):
    """Let goloop preempt these installed top-level packages' code as the
    application's own (an application installed into site-packages, e.g.
    preemptible_packages("myapp")), besides those named in
    GOLOOP_PREEMPTIBLE_PACKAGES (comma-separated).  Only for code written
    for preemption: see README, "What preemption may interrupt".  Returns
    the packages named so far."""
    global _preemptible_packages
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"preemptible_packages() takes package names (str), not {type(name).__name__}")
        if not name.isidentifier():
            raise ValueError(f"preemptible_packages() takes top-level package names, not {name!r}")
    _preemptible_packages = _preemptible_packages.union(names)
    _library_files.clear()
    return _preemptible_packages


class PreemptionWarning(RuntimeWarning):
    """A loop that asked for preemption runs cooperatively (a build whose
    _goloop cannot preempt a loop off the main thread; none today: 3.12+
    uses pending calls, 3.11 the tracer thread)."""


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


# At exit, before the interpreter's pending-call queue is torn down, sysmon
# stops asking for the steps of loops that daemon threads still run.
atexit.register(_goloop._preempt_detach_all)

# CPython 3.11 runs pending calls on the main thread only: there, another
# thread's loop is preempted through a trace function that a thread of
# goloop's, the tracer, installs on it when sysmon asks (preempt.c).  It
# starts with the first such loop, is a daemon waiting in C without the GIL,
# and is stopped at exit and around a fork (as sysmon is).
_TRACER = sys.version_info < (3, 12)
_tracer = None
_tracer_lock = threading.Lock()


def _start_tracer():
    global _tracer
    with _tracer_lock:
        if _tracer is None:
            _goloop._tracer_reset()
            _tracer = threading.Thread(target=_goloop._tracer_run, name="goloop-tracer",
                                       daemon=True)
            _tracer.start()


def _stop_tracer():
    """Stop the tracer thread; returns whether it ran."""
    global _tracer
    with _tracer_lock:
        thread, _tracer = _tracer, None
    if thread is None:
        return False
    _goloop._tracer_stop()
    if thread is not threading.current_thread():
        thread.join()
    return True


_tracer_before_fork = False


def _tracer_fork_before():
    global _tracer_before_fork
    _tracer_before_fork = _stop_tracer()


def _tracer_fork_parent():
    if _tracer_before_fork:
        _start_tracer()


def _tracer_fork_child():
    global _tracer, _tracer_lock
    _tracer = None
    _tracer_lock = threading.Lock()
    _goloop._tracer_reset()


if _TRACER:
    atexit.register(_stop_tracer)

_warned_thread = False


def _warn_not_main_thread():
    global _warned_thread
    if not _warned_thread:
        _warned_thread = True
        warnings.warn(
            "on CPython 3.11 goloop preempts only a loop running on the main thread (it "
            f"runs signal handlers and pending calls there only); this loop on "
            f"{threading.current_thread().name!r} runs task steps cooperatively",
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
    main = threading.current_thread() is threading.main_thread()
    if not main and not _goloop._preempts_threads():
        if getattr(loop, "_preempt_asked", True):
            _warn_not_main_thread()
        yield
        return
    if not main and _TRACER:
        _start_tracer()
    if loop._time_slice is None:
        loop._time_slice = default_time_slice()
    _find_library_roots()
    if not main:
        # Another thread: sysmon's requests reach it as pending calls
        # (preempt.c), with no signal handler and no wakeup-fd byte.
        _goloop._preempt_attach(loop._time_slice, None, slice_counts_cpu_time(), -1, False)
    else:
        previous = signal.signal(signal.SIGURG, _goloop._on_sigurg)
        signal.siginterrupt(signal.SIGURG, False)   # SA_RESTART: see preempt.c
        # A SIGURG that is not sysmon's goes to the handler found here,
        # unless that is ours already: a child forked while its parent's loop
        # ran inherits it, and forwarding to ourselves would recurse until
        # RecursionError.  What was there before ours is not known then, so
        # such a SIGURG gets SIGURG's default: ignored.
        forward = signal.SIG_DFL if previous is _goloop._on_sigurg else previous
        # The loop's self-pipe socket, which asyncio makes CPython's signal
        # wakeup fd: sysmon holds its SIGURGs back while it is half full, so
        # that they never crowd out an application's signal (preempt.c).
        csock = getattr(loop, "_csock", None)
        wakeup_fd = csock.fileno() if csock is not None else -1
        try:
            _goloop._preempt_attach(loop._time_slice, forward, slice_counts_cpu_time(), wakeup_fd)
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
        if main and signal.getsignal(signal.SIGURG) is _goloop._on_sigurg:
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


def _cancelled_idle_task():
    """A Task of the loop's kind (C when _asyncio is there), cancel()ed
    before its first step, on a stand-in loop that never runs it: what
    preempt.c and await.c learn the Task's _must_cancel and _fut_waiter
    fields from."""
    class IdleLoop:
        def get_debug(self):
            return False

        def call_soon(self, callback, *args, context=None):
            pass

    async def nothing():
        pass

    coro = nothing()
    task = asyncio.tasks.Task(coro, loop=IdleLoop())
    task._log_destroy_pending = False
    coro.close()
    task.cancel()
    return task


# Where the C Task keeps _must_cancel and _fut_waiter, which preempt.c and
# await.c write.  Before 3.13, Task.uncancel() leaves _must_cancel set: a
# cancel() that reaches a task while its step is parked is taken back and
# given back when the step yields (preempt.c, "a cancellation that came
# while the step was parked"); goloop.await_() sets _fut_waiter while it
# waits, so that cancel() cancels what it waits for (await.c).
_goloop._learn_must_cancel(_cancelled_idle_task())
_goloop._learn_fut_waiter(_cancelled_idle_task())

_goloop._setup_preempt(_inside_atomic, *_task_switchers(), asyncio.current_task, STEP_BASE,
                       BASE_ONLY, NEVER_PREEMPT, _library_files, is_library_file, awaits_at)
# No thread of goloop's runs at a fork: CPython 3.12+ would warn that the
# process is multi-threaded (sysmon.c).  The child starts sysmon afresh with
# its first loop.
os.register_at_fork(before=_goloop._sysmon_pause, after_in_parent=_goloop._sysmon_resume)
if _TRACER:
    os.register_at_fork(before=_tracer_fork_before, after_in_parent=_tracer_fork_parent,
                        after_in_child=_tracer_fork_child)
_locks.track_all()
