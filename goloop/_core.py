"""What the native loop core (csrc/loop) takes from asyncio.

The core makes and runs asyncio's own Handle and TimerHandle objects from C
(csrc/loop/handles.c) and recognises the Task's steps by type; it is given
those classes here, once, with the two things it leaves to Python because
they run only on error or in debug mode: the report of a callback's
exception (what Handle._run does) and the slow-callback warning (what
BaseEventLoop._run_once logs).  Its create_future and create_task look up
futures.Future and tasks.Task at each call, and leave what they do not
take (a task factory, debug mode, errors) to BaseEventLoop's.
"""
import asyncio
import collections
import inspect
import selectors
from asyncio import base_events, events, format_helpers

from . import _goloop

_FORMAT_HAS_DEBUG = "debug" in inspect.signature(format_helpers._format_callback_source).parameters


def report_callback_error(handle, exc):
    """A callback raised exc: to the loop's exception handler, as Handle._run
    sends it."""
    loop = handle._loop
    if _FORMAT_HAS_DEBUG:
        cb = format_helpers._format_callback_source(handle._callback, handle._args, debug=loop.get_debug())
    else:
        cb = format_helpers._format_callback_source(handle._callback, handle._args)
    context = {
        "message": f"Exception in callback {cb}",
        "exception": exc,
        "handle": handle,
    }
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    loop.call_exception_handler(context)


def report_slow_callback(loop, handle, seconds):
    """Debug mode: a callback or task step ran for slow_callback_duration or
    more."""
    # asyncio's logger, looked up now: tests patch base_events.logger.
    base_events.logger.warning("Executing %s took %.3f seconds", base_events._format_handle(handle), seconds)


_goloop._setup_loop_core(
    events.Handle,
    events.TimerHandle,
    getattr(events, "_ThreadSafeHandle", None),
    asyncio.Task,
    asyncio.tasks._PyTask,
    collections.deque,
    selectors.SelectorKey,
    report_callback_error,
    report_slow_callback,
    format_helpers.extract_stack,
    asyncio.futures,
    asyncio.tasks,
    base_events.BaseEventLoop,
)
