"""goloop's event loop.

In this stage the loop is the standard library's selector loop (epoll on
Linux, with its transports, subprocesses, signals and sock_* methods); what
goloop changes is where task steps run: each one on a goroutine (_steps.py).
The seam for the native core of later stages is this class: it will replace
the inherited scheduling and I/O methods one by one.
"""
import asyncio

from . import _preempt, _steps


class EventLoop(_steps.GoroutineSteps, asyncio.SelectorEventLoop):
    """An asyncio event loop that runs every task step on a goroutine.

    preempt: a step that runs longer than time_slice seconds (default: the
    GOLOOP_TIME_SLICE environment variable, else 0.01) is parked and resumed
    after the loop has run what else is ready; preempt=False never does.
    goroutines=False runs steps inline on the loop's stack, as stock asyncio
    does (so without preemption), for comparison.
    """

    def __init__(self, selector=None, *, goroutines=True, preempt=True, time_slice=None):
        # Checked before the loop exists (see _api.new_event_loop).
        time_slice = (
            _preempt.default_time_slice() if time_slice is None else _preempt.check_time_slice(time_slice)
        )
        super().__init__(selector)
        self._goroutines = bool(goroutines)
        self._preempt = bool(preempt)
        self._time_slice = time_slice

    def __repr__(self):
        return (
            f"<{self.__class__.__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()} "
            f"goroutines={self._goroutines} preempt={self._preempt} "
            f"time_slice={self._time_slice}>"
        )
