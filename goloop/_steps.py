"""Task steps on goroutines: the per-thread pool of workers, and the same
step routing for a loop class written in Python.

goloop's EventLoop recognises and runs task steps in its native core
(csrc/loop/loop.c and steps.c): a step runs on a worker goroutine from a
per-thread pool, so a step costs one resume/park round trip and a stack is
held by a worker, not by a task — a task suspended at an await holds no
stack at all.  This module gives the core that pool (a threading.local: a
goroutine belongs to the thread that started it, and the pool dies with its
thread).

GoroutineSteps does for a Python loop class (any BaseEventLoop subclass)
what the core does for EventLoop: the conformance runner mixes it into
CPython's virtual-clock test loop, whose clock the core's would replace.
Every asyncio Task schedules its steps with call_soon(): the C Task with a
TaskStepMethWrapper (whose __self__ is the task) or its bound task_wakeup,
the pure-Python Task with its bound __step / __wakeup methods.  The mixin's
_call_soon recognises those callbacks by their __self__ and turns the Handle
into a GoroutineHandle (same layout, so just a class change), whose _run()
hands the handle to a worker; preempted steps wait in the loop's deque and
resume one per iteration, after work that became ready meanwhile (for at
most one slice) — the policy loop.c documents; a KeyboardInterrupt or
SystemExit raised in the loop's own code while steps are preempted goes into
the oldest preempted step, as there.
"""
import asyncio
import collections
import sys
import threading
import time
from asyncio import events

from . import _goloop, _preempt

_task_types = (asyncio.Task, asyncio.tasks._PyTask)


def is_task_step(callback):
    """Is callback a Task's step or wakeup, as scheduled by the Task itself?"""
    return isinstance(getattr(callback, "__self__", None), _task_types)


class _Pool(threading.local):
    def __init__(self):
        self.idle = []   # parked worker goroutines of this thread


_goloop._setup_steps(_Pool())
run_on_goroutine = _goloop.run_step
resume_step = _goloop.resume_step
raised_by_a_step = _goloop.raised_by_a_step


# The GIL, while preempted steps keep the loop busy.  A thread waiting for
# the GIL asks the holder to drop it only when the GIL has not changed hands
# for a switch interval (5 ms); but the loop releases and retakes it in
# every select(), and retakes it before the waiting thread has woken up, so
# with steps preempted every fraction of a millisecond, a thread that needs
# the GIL (an executor's, aiosqlite's) waits for seconds — measured: 200
# executor round trips beside two hogs took 48 s at a 0.2 ms slice, 1 s
# with this.  So once per switch interval, before resuming a preempted
# step, the loop stays out of the GIL long enough for a waiting thread to
# take it, as CPython's forced switch would have made it.
_GIL_PAUSE = 100e-6
_gil_handed_over = [0.0]


def _hand_over_gil(now):
    if now - _gil_handed_over[0] >= sys.getswitchinterval() and threading.active_count() > 1:
        time.sleep(_GIL_PAUSE)
        _gil_handed_over[0] = time.monotonic()


class GoroutineSteps:
    """Mixin for a BaseEventLoop subclass: its task steps run on goroutines.

    goloop.EventLoop is built from it; so can any other loop class (the
    conformance runner mixes it into CPython's virtual-clock test loop).
    Set _goroutines = False on an instance to run steps inline, _preempt =
    False to never preempt them, _time_slice to a number of seconds (None:
    GOLOOP_TIME_SLICE or 10 ms)."""

    _goroutines = True
    _preempt = True
    _time_slice = None
    _preempted = ()            # until __init__: the deque of preempted steps
    _preempted_since = None    # when other work first went ahead of them
    _resumer_queued = False    # is _resume_preempted in the ready queue?

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._preempted = collections.deque()   # preempted step workers (steps.c)

    def run_forever(self):
        with _preempt.running(self):
            return super().run_forever()

    def close(self):
        super().close()
        if self._preempted:
            # Dropped workers unwind their steps (GoroutineExit), as stock
            # asyncio drops the pending tasks of a closed loop.
            self._preempted.clear()

    def _run_once(self):
        try:
            super()._run_once()
        except (KeyboardInterrupt, SystemExit) as exc:
            if not self._preempted or raised_by_a_step(exc):
                raise
            # The loop's own code took it (a signal handler ran here): it
            # goes where stock asyncio would have raised it, into the
            # computation (the module's docstring).
            resume_step(self._preempted, exc.with_traceback(None))
        finally:
            # Every iteration ends with a resumer queued if steps wait, even
            # one that a KeyboardInterrupt cut short: otherwise they would
            # never run again, and a Runner's shutdown would wait forever.
            if self._preempted and not self._resumer_queued:
                self._call_soon(self._resume_preempted, (), None)
                self._resumer_queued = True

    def _resume_preempted(self):
        """Resume the oldest preempted step, unless other work is ready:
        that goes first, for up to one time slice."""
        self._resumer_queued = False
        now = time.monotonic()
        if self._ready:
            if self._preempted_since is None:
                self._preempted_since = now
            if now - self._preempted_since < self._time_slice:
                return   # queued again at the end of this iteration
        self._preempted_since = None
        _hand_over_gil(now)
        resume_step(self._preempted)

    def _call_soon(self, callback, args, context):
        handle = super()._call_soon(callback, args, context)
        if handle._source_traceback:
            # Debug mode: the Handle recorded the stack from this override's
            # frame up.  call_soon()/call_soon_threadsafe() drop one entry
            # (their stock _call_soon's); drop ours too, so the caller's line
            # is last, as on stock (repr "created at", exception contexts).
            del handle._source_traceback[-1]
        if self._goroutines and is_task_step(callback):
            handle.__class__ = GoroutineHandle
        return handle


class GoroutineHandle(events.Handle):
    """A Handle whose callback, a task step, runs on a worker goroutine."""

    __slots__ = ()

    def _run(self):
        run_on_goroutine(self, self._loop._preempted)

