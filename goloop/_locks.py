"""Which threading locks goloop counts, so that a step holding one is never
preempted (the mechanism, and why, is in csrc/cpython/locks.c).

Every lock Python code can take with the standard library ends in one of
these methods: the C Lock and RLock of _thread (threading.Lock/RLock, and
the Python RLock, Condition, Semaphore, Event, Barrier and queue.Queue,
which are built on them), threading.Semaphore and BoundedSemaphore (a unit
taken is a lock held: another task's acquire() on the same thread would
block it), multiprocessing's SemLock; and Condition.wait, which leaves the
count as it found it.  The context managers that swap process-wide state
(redirect_stdout/stderr, warnings.catch_warnings, contextlib.chdir) count
as a lock while entered.  They are replaced once, on their types, when goloop
is imported, so locks made before that are counted too.

One kind of object keeps lock methods of its own: a Condition binds its
lock's acquire/release (and an RLock's _release_save/_acquire_restore) when
it is made.  Those made before goloop was imported are found once, by the
garbage collector's list of objects, and bound again to the counting
methods (gevent's monkey-patching does the same for the locks it replaces).
"""
import _thread
import contextlib
import gc
import threading
import warnings

from . import _goloop

ACQUIRE, RELEASE, ENTER = _goloop.LOCK_ACQUIRE, _goloop.LOCK_RELEASE, _goloop.LOCK_ENTER

TRACKED = [
    (_thread.LockType, {
        "acquire": ACQUIRE, "acquire_lock": ACQUIRE, "__enter__": ACQUIRE,
        "release": RELEASE, "release_lock": RELEASE, "__exit__": RELEASE,
    }),
    (_thread.RLock, {
        "acquire": ACQUIRE, "__enter__": ACQUIRE, "release": RELEASE, "__exit__": RELEASE,
        "_release_save": _goloop.LOCK_RELEASE_SAVE,
        "_acquire_restore": _goloop.LOCK_ACQUIRE_RESTORE,
    }),
    # Semaphore.__exit__ calls release(): not counted twice.
    (threading.Semaphore, {"acquire": ACQUIRE, "__enter__": ACQUIRE, "release": RELEASE}),
    (threading.BoundedSemaphore, {"release": RELEASE}),
    (threading.Condition, {"wait": _goloop.LOCK_PRESERVE}),
    # Not locks, but the same hazard: while one of these is entered, the
    # whole process prints elsewhere / catches warnings / runs in another
    # directory, and another task's step would too.
    (contextlib._RedirectStream, {"__enter__": ENTER, "__exit__": RELEASE}),
    (warnings.catch_warnings, {"__enter__": ENTER, "__exit__": RELEASE}),
]
if hasattr(contextlib, "chdir"):
    TRACKED.append((contextlib.chdir, {"__enter__": ENTER, "__exit__": RELEASE}))
try:
    import _multiprocessing
except ImportError:   # (built without sem_open)
    pass
else:
    TRACKED.append((_multiprocessing.SemLock, {
        "acquire": ACQUIRE, "__enter__": ACQUIRE, "release": RELEASE, "__exit__": RELEASE,
    }))


CONDITION_BINDS = ("acquire", "release", "_release_save", "_acquire_restore")


def rebind_condition(cond):
    """Bind cond's own copies of its lock's methods again (now counting)."""
    own, lock = vars(cond), cond._lock
    for name in CONDITION_BINDS:
        bound = own.get(name)
        if getattr(bound, "__self__", None) is lock:
            own[name] = getattr(lock, name)


def track_all():
    for cls, methods in TRACKED:
        methods = {name: kind for name, kind in methods.items() if name in cls.__dict__}
        _goloop._track_locks(cls, methods)
    for obj in gc.get_objects():
        if isinstance(obj, threading.Condition):
            rebind_condition(obj)

