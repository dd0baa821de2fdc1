"""goloop's event loop.

Two halves: the native core (csrc/loop, the C class LoopCore) owns
scheduling — handles, the ready queue, timers, the loop's iteration, task
steps started on worker goroutines — and the standard library's selector
loop, behind it in the method order, provides everything else (TLS,
subprocesses, signals, sock_* methods, DNS, executors) on top of it.  Socket
and datagram transports are asyncio's with their read and write paths in C
(_transports.py, csrc/loop/transport.c).
"""
import asyncio
import os
import sys
import threading
from asyncio import events

from . import _core, _dump, _goloop, _preempt, _steps, _transports  # noqa: F401  (_core, _steps: set up the core)


# 3.13's run_forever cleans up even when its setup refused to run (a loop
# already running: the cleanup then clears the running loop's state, and a
# nested run_forever() leaves the outer loop without its asyncgen hooks);
# 3.11, 3.12 and 3.14+ set up before their try.  goloop does as the running
# version does.
_CLEANUP_AFTER_FAILED_SETUP = sys.version_info[:2] == (3, 13)


class EventLoop(_goloop.LoopCore, asyncio.SelectorEventLoop):
    """An asyncio event loop that runs every task step on a goroutine.

    preempt: a step that runs longer than time_slice seconds (default: the
    GOLOOP_TIME_SLICE environment variable, else 0.01) is parked and resumed
    after the loop has run what else is ready; preempt=False never does.
    A loop on any thread preempts (on 3.11, whose signal handlers and
    pending calls run on the main thread only, a loop elsewhere through a
    trace function goloop's tracer thread installs on it, unless that
    thread has one of its own).  goroutines=False runs steps inline
    on the loop's stack, as stock asyncio does (so without preemption), for
    comparison.
    """

    def __init__(self, selector=None, *, goroutines=True, preempt=None, time_slice=None):
        self._preempt_asked = (
            bool(preempt) or time_slice is not None or bool(os.environ.get(_preempt.TIME_SLICE_ENV)))
        # Checked before the loop exists (see _api.new_event_loop).
        time_slice = (
            _preempt.default_time_slice() if time_slice is None else _preempt.check_time_slice(time_slice)
        )
        if selector is None:
            selector = _goloop.Poller()
        elif not isinstance(selector, _goloop.Poller):
            # Another selector (a GUI toolkit's, a test's): readers and
            # writers go through asyncio's own code, which speaks the
            # selectors API (from __init__ on: it registers the self-pipe),
            # and the core polls it through select().
            base = asyncio.selector_events.BaseSelectorEventLoop
            for name in ("_add_reader", "_remove_reader", "_add_writer", "_remove_writer"):
                setattr(self, name, getattr(base, name).__get__(self))
        super().__init__(selector)
        self._goroutines = bool(goroutines)
        self._preempt = preempt is None or bool(preempt)
        self._time_slice = time_slice
        _dump.LOOPS.add(self)   # goloop.dump() lists it

    _make_socket_transport = _transports.make_socket_transport
    _make_ssl_transport = _transports.make_ssl_transport
    _make_datagram_transport = _transports.make_datagram_transport
    _make_read_pipe_transport = _transports.make_read_pipe_transport
    _accept_connection = _transports.accept_connection

    def run_forever(self):
        """Run until stop() is called."""
        with _preempt.running(self):
            if _CLEANUP_AFTER_FAILED_SETUP:
                try:
                    self._run_forever_setup()
                    self._run_until_stopped()    # the core's iterations
                finally:
                    self._run_forever_cleanup()
            else:
                self._run_forever_setup()
                try:
                    self._run_until_stopped()
                finally:
                    self._run_forever_cleanup()

    if not hasattr(asyncio.BaseEventLoop, "_run_forever_setup"):
        # Before 3.13 run_forever() was one method; these are its two
        # halves, as 3.13 split them (and as subclasses there may extend).
        def _run_forever_setup(self):
            self._check_closed()
            self._check_running()
            self._set_coroutine_origin_tracking(self._debug)
            self._old_agen_hooks = sys.get_asyncgen_hooks()
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            events._set_running_loop(self)

        def _run_forever_cleanup(self):
            self._stopping = False
            self._thread_id = None
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            hooks, self._old_agen_hooks = getattr(self, "_old_agen_hooks", None), None
            if hooks is not None:
                sys.set_asyncgen_hooks(*hooks)

    def close(self):
        super().close()
        # Ready callbacks, timers and preempted steps: preempted workers
        # unwind their steps (GoroutineExit), as stock asyncio drops the
        # pending tasks of a closed loop.
        self._drop_pending()

    def __repr__(self):
        return (
            f"<{self.__class__.__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()} "
            f"goroutines={self._goroutines} preempt={self._preempt} "
            f"time_slice={self._time_slice}>"
        )
