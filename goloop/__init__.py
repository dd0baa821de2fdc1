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

_SUPPORTED = (
    "goloop supports CPython 3.11 to 3.15 (not free-threaded builds) on Linux x86-64 and AArch64"
)


def _check_supported():
    """Raise ImportError, saying what is supported, on an interpreter the
    native runtime does not support.  Free-threaded builds (3.13t, 3.14t)
    keep per-stack state goloop does not save (references on the C stack,
    deferred references in suspended frames)."""
    import sysconfig

    version = f"{_sys.version_info[0]}.{_sys.version_info[1]}"
    if not ((3, 11) <= tuple(_sys.version_info[:2]) <= (3, 15)):
        raise ImportError(f"{_SUPPORTED}; this is Python {version}")
    if _sys.implementation.name != "cpython" or not _sys.platform.startswith("linux"):
        raise ImportError(f"{_SUPPORTED}; this is {_sys.implementation.name} on {_sys.platform}")
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        raise ImportError(f"{_SUPPORTED}; this is a free-threaded build of Python {version}")


_check_supported()

from . import _goloop  # noqa: E402  (raises ImportError on other CPUs)
from ._goloop import (  # noqa: E402
    await_,
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

SCHEDTRACE_ENV = "GOLOOP_SCHEDTRACE"


def _parse_schedtrace(text):
    """GOLOOP_SCHEDTRACE's period: '<ms>' or '<ms>ms' (as Go's
    GODEBUG=schedtrace=<ms>), 0 or empty for none; ValueError otherwise."""
    s = text.strip().lower()
    if s.endswith("ms"):
        s = s[:-2].strip()
    try:
        ms = int(s) if s else 0
    except ValueError:
        ms = -1
    if not 0 <= ms <= 86_400_000:
        raise ValueError(
            f"{SCHEDTRACE_ENV}={text!r} is not a period: a whole number of milliseconds "
            "from 1 to 86400000 (0 or empty: no trace)") from None
    return ms


def _apply_schedtrace():
    """The scheduler trace (csrc/cpython/schedtrace.c): a line per running
    loop every GOLOOP_SCHEDTRACE ms on stderr, printed by a thread of its own
    that runs only while a loop runs, and is stopped around os.fork()."""
    _goloop._schedtrace_configure(_parse_schedtrace(_os.environ.get(SCHEDTRACE_ENV, "")))
    _os.register_at_fork(before=_goloop._schedtrace_pause,
                         after_in_parent=_goloop._schedtrace_resume,
                         after_in_child=_goloop._schedtrace_forget)


_apply_schedtrace()

from . import _api  # noqa: E402
from ._api import install, new_event_loop, run  # noqa: E402
from ._preempt import PreemptionWarning, atomic, preemptible_packages  # noqa: E402
from .loop import EventLoop  # noqa: E402
from ._dump import dump  # noqa: E402
from . import _dump  # noqa: E402

_dump.install_signal_from_env()

__all__ = [
    "EventLoop",
    "install",
    "new_event_loop",
    "run",
    "atomic",
    "await_",
    "dump",
    "preemptible_packages",
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

if _api.POLICIES_DEPRECATED:
    def __getattr__(name):
        # As asyncio.DefaultEventLoopPolicy does from 3.14.
        if name == "EventLoopPolicy":
            import warnings

            warnings.warn(
                "'goloop.EventLoopPolicy' is deprecated and slated for removal in Python 3.16",
                DeprecationWarning,
                stacklevel=2,
            )
            return _api.EventLoopPolicy
        raise AttributeError(f"module 'goloop' has no attribute {name!r}")
else:
    EventLoopPolicy = _api.EventLoopPolicy
    __all__.insert(1, "EventLoopPolicy")
