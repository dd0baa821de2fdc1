"""The event loops the suite compares, by name.

goloop is measured against stock asyncio (what it replaces), uvloop (the
loop people pick for speed, the suite's yardstick: every ratio is to it) and
rloop (a younger Rust loop), each made the way its users make it.  uvloop
and rloop are optional (pip install .[bench]); available() says which loops
this interpreter can import, and the runner measures those.  Modules are
imported only when a loop is made, so that a run on asyncio does not even
load goloop.
"""
import asyncio
import importlib
from importlib import metadata

LOOPS = ("asyncio", "uvloop", "goloop", "rloop")
REFERENCE = "uvloop"          # the loop every ratio is taken against


def _module(name):
    """The loop's module (each loop is a module of its own name with a
    new_event_loop() function); imports it."""
    if name not in LOOPS:
        raise ValueError(f"unknown loop {name!r}; one of {', '.join(LOOPS)}")
    return importlib.import_module(name)


def loop_factory(name):
    """The loop's new_event_loop function."""
    return _module(name).new_event_loop


def new_event_loop(name):
    return loop_factory(name)()


def runner(name):
    """An asyncio.Runner on a new loop of this kind (works on 3.11 too)."""
    return asyncio.Runner(loop_factory=loop_factory(name))


def run(name, main):
    """Run the coroutine `main` on a new loop of this kind, as asyncio.run() does."""
    with runner(name) as r:
        return r.run(main)


def is_available(name):
    try:
        _module(name)
    except ImportError:
        return False
    return True


def available():
    """The loops of LOOPS this interpreter can import, in LOOPS order."""
    return tuple(name for name in LOOPS if is_available(name))


def version(name):
    """The installed version of the loop's package ('stdlib' for asyncio)."""
    if name == "asyncio":
        return "stdlib"
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:   # goloop run from the source tree
        return getattr(_module(name), "__version__", "?")
