"""The entry points users switch to goloop with, shaped like uvloop's."""
import asyncio
import inspect
import sys
import warnings

from . import _preempt
from .loop import EventLoop


# EventLoop's keyword-only options (goroutines=...).
_OPTIONS = frozenset(
    p.name
    for p in inspect.signature(EventLoop.__init__).parameters.values()
    if p.kind is p.KEYWORD_ONLY
)


def new_event_loop(**options):
    """A new goloop EventLoop; options are EventLoop's (preempt=True,
    time_slice=None, goroutines=True)."""
    # Reject unknown options before the loop object exists: EventLoop(bad=1)
    # fails binding its arguments after __new__, and the half-made loop's
    # __del__ then reports an AttributeError ('_closed') as unraisable.
    for name in options:
        if name not in _OPTIONS:
            raise TypeError(f"new_event_loop() got an unexpected keyword argument {name!r}")
    if options.get("time_slice") is not None:
        _preempt.check_time_slice(options["time_slice"])
    return EventLoop(**options)


# Event loop policies are deprecated from 3.14 (to go in 3.16): reaching
# asyncio.DefaultEventLoopPolicy warns there, so the class is taken by its
# private name, and goloop.EventLoopPolicy warns instead, when it is used
# (goloop/__init__.py), as asyncio's does.
POLICIES_DEPRECATED = sys.version_info >= (3, 14)
_DefaultPolicy = (
    asyncio.unix_events._DefaultEventLoopPolicy if POLICIES_DEPRECATED else asyncio.DefaultEventLoopPolicy
)


class EventLoopPolicy(_DefaultPolicy):
    """asyncio.set_event_loop_policy(goloop.EventLoopPolicy()) makes every
    loop the policy creates a goloop EventLoop.  Deprecated from Python
    3.14, as asyncio's policies are: use goloop.run() or
    asyncio.run(main, loop_factory=goloop.new_event_loop)."""

    def __init__(self, **options):
        super().__init__()
        self._options = options

    def _loop_factory(self):
        return new_event_loop(**self._options)


class NotACoroutineError(TypeError, ValueError):
    """run() was given something that is not a coroutine.

    asyncio.run() raises ValueError for this before 3.14 (TypeError from
    3.14, which also accepts any awaitable) and uvloop.run() TypeError; this
    is both, so code written for either catches it."""


def run(main, *, debug=None, **options):
    """Run coroutine main on a new goloop loop and return its result, as
    asyncio.run() does (cancelling leftover tasks, shutting down async
    generators and the default executor, closing the loop)."""
    # Same checks, same order and messages as asyncio.run(): a running loop
    # first (Runner.run would say "Runner.run() cannot be called ..."), then
    # the argument.
    if asyncio._get_running_loop() is not None:
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    if not asyncio.iscoroutine(main):
        if sys.version_info < (3, 14):
            raise NotACoroutineError(f"a coroutine was expected, got {main!r}")
        if not inspect.isawaitable(main):   # 3.14+: Runner.run() awaits any awaitable
            raise NotACoroutineError("An asyncio.Future, a coroutine or an awaitable is required")
    with asyncio.Runner(debug=debug, loop_factory=lambda: new_event_loop(**options)) as runner:
        return runner.run(main)


def install():
    """Make goloop the event loop asyncio creates (sets the policy).

    Deprecated on Python 3.12+, as uvloop.install() is: use goloop.run(),
    or asyncio.run(main, loop_factory=goloop.new_event_loop)."""
    if sys.version_info >= (3, 12):
        warnings.warn(
            "goloop.install() is deprecated in favor of goloop.run() starting with Python 3.12.",
            DeprecationWarning,
            stacklevel=2,
        )
    asyncio.set_event_loop_policy(EventLoopPolicy())   # 3.14+: asyncio warns too


def use_for_new_loops():
    """Make asyncio's new loops goloop's for the rest of the process, for a
    program that does not ask for a loop factory (python -m goloop).  Up to
    3.13 by setting the policy; from 3.14, where policies are deprecated,
    by replacing asyncio.new_event_loop(), which asyncio.run() and
    asyncio.Runner call when given no loop_factory."""
    if not POLICIES_DEPRECATED:
        asyncio.set_event_loop_policy(EventLoopPolicy())
        return
    asyncio.events.new_event_loop = new_event_loop
    asyncio.new_event_loop = new_event_loop
