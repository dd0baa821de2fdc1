"""Task steps on goroutines: recognising them, and the handle that runs one.

The event loop stays the standard library's; what changes is where a task
step runs.  Every asyncio Task schedules its steps with call_soon(): the C
Task with a TaskStepMethWrapper (whose __self__ is the task) or its bound
task_wakeup, the pure-Python Task with its bound __step / __wakeup methods.
EventLoop._call_soon recognises those callbacks by their __self__ and turns
the Handle into a GoroutineHandle (same layout, so just a class change),
whose _run() hands the handle to a worker goroutine instead of running it on
the loop's own stack.

The workers and their per-thread pool are native (csrc/cpython/steps.c): a
step costs one resume/park round trip, and a stack is held by a worker, not
by a task — a task suspended at an await holds no stack at all.  This module
gives steps.c the two things it takes from Python: Handle._run, which a
worker calls, and the per-thread pool (a threading.local; a goroutine
belongs to the thread that started it, and the pool dies with its thread).
"""
import asyncio
import threading
from asyncio import events

from . import _goloop

_task_types = (asyncio.Task, asyncio.tasks._PyTask)


def is_task_step(callback):
    """Is callback a Task's step or wakeup, as scheduled by the Task itself?"""
    return isinstance(getattr(callback, "__self__", None), _task_types)


class _Pool(threading.local):
    def __init__(self):
        self.idle = []   # parked worker goroutines of this thread


_goloop._setup_steps(events.Handle._run, _Pool())
run_on_goroutine = _goloop.run_step


class GoroutineSteps:
    """Mixin for a BaseEventLoop subclass: its task steps run on goroutines.

    goloop.EventLoop is built from it; so can any other loop class (the
    conformance runner mixes it into CPython's virtual-clock test loop).
    Set _goroutines = False on an instance to run steps inline."""

    _goroutines = True

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
        run_on_goroutine(self)
