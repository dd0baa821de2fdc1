"""goloop — an asyncio event loop whose tasks run as goroutines.

    goloop.run(main())                                        # preferred
    asyncio.run(main(), loop_factory=goloop.new_event_loop)
    asyncio.set_event_loop_policy(goloop.EventLoopPolicy())

Underneath, ``Goroutine`` runs a Python callable on a native stack of its
own, ``park()`` suspends it, and ``resume()``/``throw()`` continue it.  See
README.md.
"""
import os as _os
import sys as _sys

__version__ = "0.1.0"

_SUPPORTED = "goloop supports CPython 3.11, 3.12 and 3.13 on Linux x86-64 and AArch64"

if not ((3, 11) <= tuple(_sys.version_info[:2]) <= (3, 13)):
    raise ImportError(
        f"{_SUPPORTED}; this is Python {_sys.version_info[0]}.{_sys.version_info[1]}"
    )
if _sys.implementation.name != "cpython" or not _sys.platform.startswith("linux"):
    raise ImportError(f"{_SUPPORTED}; this is {_sys.implementation.name} on {_sys.platform}")

from . import _goloop  # noqa: E402  (raises ImportError on other CPUs)
from ._goloop import (  # noqa: E402
    Goroutine,
    GoroutineError,
    GoroutineExit,
    current,
    get_default_stack_size,
    goroutines,
    park,
    set_default_stack_size,
    stats,
)

STACK_SIZE_ENV = "GOLOOP_STACK_SIZE"


def _parse_size(text):
    """'262144', '256k', '8M', '1g' -> bytes; ValueError otherwise."""
    s = text.strip().lower()
    mult = 1
    if s and s[-1] in "kmg":
        mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[s[-1]]
        s = s[:-1]
    try:
        return int(s) * mult
    except ValueError:
        raise ValueError(f"{STACK_SIZE_ENV}={text!r} is not a size (bytes, or with k/m/g)") from None


def _apply_env():
    text = _os.environ.get(STACK_SIZE_ENV)
    if not text:
        return
    size = _parse_size(text)
    try:
        set_default_stack_size(size)
    except ValueError as e:
        raise ValueError(f"{STACK_SIZE_ENV}={text!r}: {e}") from None


_apply_env()

from ._api import EventLoopPolicy, install, new_event_loop, run  # noqa: E402
from ._preempt import PreemptionWarning, atomic  # noqa: E402
from .loop import EventLoop  # noqa: E402

__all__ = [
    "EventLoop",
    "EventLoopPolicy",
    "install",
    "new_event_loop",
    "run",
    "atomic",
    "PreemptionWarning",
    "Goroutine",
    "GoroutineError",
    "GoroutineExit",
    "current",
    "get_default_stack_size",
    "goroutines",
    "park",
    "set_default_stack_size",
    "stats",
]
