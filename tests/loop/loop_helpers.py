"""Helpers for the differential event-loop tests: run the same coroutine on
a stock asyncio loop and on a goloop loop and compare what each observed."""
import asyncio
import re

import goloop

KINDS = ("asyncio", "goloop")


def make_loop(kind, **options):
    """A new loop of `kind`: the stock selector loop, or goloop's."""
    if kind == "asyncio":
        assert not options
        return asyncio.SelectorEventLoop()
    if kind == "goloop":
        return goloop.new_event_loop(**options)
    raise ValueError(kind)


def run_on(kind, main, *, debug=False, **options):
    """Run main() (a coroutine function) to completion on a new loop of
    `kind` through asyncio.Runner, as asyncio.run() does; its result."""
    with asyncio.Runner(debug=debug, loop_factory=lambda: make_loop(kind, **options)) as runner:
        return runner.run(main())


def run_both(main, *, debug=False):
    """(stock result, goloop result) of main() run on each kind of loop."""
    return run_on("asyncio", main, debug=debug), run_on("goloop", main, debug=debug)


_ADDR = re.compile(r"0x[0-9a-fA-F]+")
_FD = re.compile(r"fd=-?\d+")
_LINE = re.compile(r"(\.py):\d+")


def normalize(text):
    """Blank out what differs between two otherwise equal runs: object
    addresses, file descriptors and line numbers."""
    text = _ADDR.sub("0x?", text)
    text = _FD.sub("fd=?", text)
    return _LINE.sub(r"\1:?", text)


def outcome(fn, *args, **kwargs):
    """('ok', result) or (exception type, normalized message) of fn()."""
    try:
        return ("ok", fn(*args, **kwargs))
    except BaseException as e:  # noqa: B902 - the type is what we compare
        return (type(e), normalize(str(e)))


def on_goroutine():
    """Is the caller running on a goroutine (a goloop task step)?"""
    return goloop.current() is not None
