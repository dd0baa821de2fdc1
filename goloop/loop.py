"""goloop's event loop.

In this stage the loop is the standard library's selector loop (epoll on
Linux, with its transports, subprocesses, signals and sock_* methods); what
goloop changes is where task steps run: each one on a goroutine (_steps.py).
The seam for the native core of later stages is this class: it will replace
the inherited scheduling and I/O methods one by one.
"""
import asyncio

from . import _steps


class EventLoop(_steps.GoroutineSteps, asyncio.SelectorEventLoop):
    """An asyncio event loop that runs every task step on a goroutine.

    goroutines=False runs steps inline on the loop's stack, as stock asyncio
    does, for comparison.
    """

    def __init__(self, selector=None, *, goroutines=True):
        super().__init__(selector)
        self._goroutines = bool(goroutines)

    def __repr__(self):
        return (
            f"<{self.__class__.__name__} running={self.is_running()} "
            f"closed={self.is_closed()} debug={self.get_debug()} "
            f"goroutines={self._goroutines}>"
        )
