"""Bad input gets what asyncio gives it.

A table of misuses -- wrong arguments, closed loops, calls from the wrong
thread, reentrant runs -- each done once on a stock asyncio loop and once on
a goloop loop.  Both must raise, with the same exception type and the same
message (addresses, descriptors, line numbers and task numbers blanked).
Misuse from inside a running loop is done both from a task step (on
goloop: on a goroutine) and from a plain callback.
"""
import asyncio
import re
import signal
import socket
import sys
import threading

import pytest

import goloop
from loop_helpers import KINDS, make_loop, normalize

PY312 = sys.version_info >= (3, 12)
_TASK_NO = re.compile(r"Task-\d+")
_WHEN = re.compile(r"when=[0-9.]+")
_PORT = re.compile(r"'127\.0\.0\.1', \d+")


def _norm(text):
    text = _TASK_NO.sub("Task-?", normalize(text))
    text = _WHEN.sub("when=?", text)
    return _PORT.sub("'127.0.0.1', ?", text)


def _caught(e):
    return (type(e), _norm(str(e)))


def attempt(fn, *args, **kwargs):
    """(exception type, normalized message) of fn(), or ('ok', result)."""
    try:
        return ("ok", _norm(repr(fn(*args, **kwargs))))
    except BaseException as e:  # noqa: B902
        return _caught(e)


def cb():
    pass


async def acoro_fn():
    pass


def in_task(loop, fn):
    """Do fn() inside a task step of the running loop; its outcome."""

    async def main():
        return attempt(fn)

    return loop.run_until_complete(main())


def in_callback(loop, fn):
    """Do fn() inside a plain callback of the running loop; its outcome."""
    fut = loop.create_future()
    loop.call_soon(lambda: fut.set_result(attempt(fn)))
    return loop.run_until_complete(fut)


def awaiting(loop, afn):
    """Await afn() inside a task; the outcome."""

    async def main():
        try:
            return ("ok", _norm(repr(await afn())))
        except BaseException as e:  # noqa: B902
            return _caught(e)

    return loop.run_until_complete(main())


def from_thread(loop, fn, debug=True):
    """Do fn() from another thread while the loop runs (in debug mode)."""
    loop.set_debug(debug)
    box = []

    async def main():
        t = threading.Thread(target=lambda: box.append(attempt(fn)))
        t.start()
        while t.is_alive():
            await asyncio.sleep(0.001)
        t.join()

    loop.run_until_complete(main())
    return box[0]


def closed(loop, fn):
    loop.close()
    return attempt(fn)


def with_coro(fn):
    """fn(coro) for a fresh coroutine that is closed afterwards (no
    'never awaited' warning whatever fn did with it)."""
    coro = acoro_fn()
    try:
        return fn(coro)
    finally:
        coro.close()


def _sock(kind=socket.SOCK_STREAM, blocking=False):
    s = socket.socket(socket.AF_INET, kind)
    s.setblocking(blocking)
    _SOCKETS.append(s)
    return s


_SOCKETS = []


def _connected_blocking_pair():
    a, b = socket.socketpair()
    _SOCKETS.extend((a, b))
    a.setblocking(True)
    return a


def _other_loop_future(loop):
    other = asyncio.new_event_loop()
    _OTHER_LOOPS.append(other)
    return other.create_future()


_OTHER_LOOPS = []


class _Bad:
    def __await__(self):
        yield 42          # neither a Future nor None: a bad yield


async def _await_self():
    await asyncio.current_task()


async def _raise_stop_iteration():
    raise StopIteration


async def _await_int():
    await 42


async def _nested_asyncio_run():
    return with_coro(asyncio.run)


async def _nested_goloop_run():
    return with_coro(goloop.run)


def _other_loop_run(loop):
    other = asyncio.new_event_loop()
    try:
        return with_coro(other.run_until_complete)
    finally:
        other.close()


def debug(case):
    """The case on a loop in debug mode: asyncio checks callbacks (and the
    thread) in call_soon/call_later/call_at only then."""

    def run(loop):
        loop.set_debug(True)
        return case(loop)

    return run


def deferred(fn):
    """A misuse that non-debug asyncio accepts and reports when the loop
    runs the callback: what the exception handler got."""

    def run(loop):
        seen = []
        loop.set_exception_handler(lambda loop, ctx: seen.append(ctx))
        accepted = attempt(fn, loop)
        loop.run_until_complete(asyncio.sleep(0.002))
        return accepted, [(_norm(c["message"]), _caught(c["exception"])) for c in seen]

    return run


CASES = {
    # wrong arguments (checked in debug mode; see deferred cases below)
    "call_soon(non-callable)": debug(lambda loop: attempt(loop.call_soon, 1)),
    "call_soon(coroutine function)": debug(lambda loop: attempt(loop.call_soon, acoro_fn)),
    "call_soon(coroutine)": debug(lambda loop: with_coro(lambda c: attempt(loop.call_soon, c))),
    "call_soon_threadsafe(non-callable)": debug(lambda loop: attempt(loop.call_soon_threadsafe, "x")),
    "call_soon(non-callable), not debug": deferred(lambda loop: loop.call_soon(1)),
    "call_later(non-callable), not debug": deferred(lambda loop: loop.call_later(0.001, None)),
    "call_soon(callback that raises), not debug": deferred(lambda loop: loop.call_soon(_raises_type_error)),
    "call_later(str delay)": lambda loop: attempt(loop.call_later, "1", cb),
    "call_later(None delay)": lambda loop: attempt(loop.call_later, None, cb),
    "call_later(non-callable)": debug(lambda loop: attempt(loop.call_later, 0.1, 1)),
    "call_at(None)": lambda loop: attempt(loop.call_at, None, cb),
    "call_soon()": lambda loop: attempt(loop.call_soon),
    "call_soon(unknown keyword)": lambda loop: attempt(loop.call_soon, cb, bogus=1),
    "call_later(delay only)": lambda loop: attempt(loop.call_later, 1),
    "call_at()": lambda loop: attempt(loop.call_at),
    "call_soon_threadsafe()": lambda loop: attempt(loop.call_soon_threadsafe),
    "add_reader(fd only)": lambda loop: attempt(loop.add_reader, 0),
    "call_at(str), then run": lambda loop: _bad_timer_then_run(loop),
    "call_at(coroutine function)": debug(lambda loop: attempt(loop.call_at, 1.0, acoro_fn)),
    "create_task(int)": lambda loop: attempt(loop.create_task, 1),
    "create_task(None)": lambda loop: attempt(loop.create_task, None),
    "create_task(coroutine function)": lambda loop: attempt(loop.create_task, acoro_fn),
    "create_task(future)": lambda loop: attempt(loop.create_task, loop.create_future()),
    # Task(eager_start=True) exists since 3.12; create_task() passes it on
    # only from 3.14 (where it is valid, and goloop must take it too)
    "create_task(eager_start=True)": lambda loop: with_coro(
        lambda c: attempt(loop.create_task, c, eager_start=True)
    ),
    "create_task(bad keyword)": lambda loop: with_coro(lambda c: attempt(loop.create_task, c, bogus=1)),
    "ensure_future(int)": lambda loop: attempt(asyncio.ensure_future, 1, loop=loop),
    "run_until_complete(int)": lambda loop: attempt(loop.run_until_complete, 1),
    "run_until_complete(future of another loop)": lambda loop: attempt(
        loop.run_until_complete, _other_loop_future(loop)
    ),
    "set_exception_handler(non-callable)": lambda loop: attempt(loop.set_exception_handler, 1),
    "set_task_factory(non-callable)": lambda loop: attempt(loop.set_task_factory, 1),
    "set_default_executor(non-executor)": lambda loop: attempt(loop.set_default_executor, object()),
    "run_in_executor(non-callable)": debug(lambda loop: attempt(loop.run_in_executor, None, 1)),
    "run_in_executor(coroutine function)": debug(lambda loop: attempt(loop.run_in_executor, None, acoro_fn)),
    "add_signal_handler(invalid number)": lambda loop: attempt(loop.add_signal_handler, 99999, cb),
    "add_signal_handler(SIGKILL)": lambda loop: attempt(loop.add_signal_handler, signal.SIGKILL, cb),
    "add_signal_handler(coroutine function)": lambda loop: attempt(
        loop.add_signal_handler, signal.SIGUSR1, acoro_fn
    ),
    "remove_signal_handler(invalid number)": lambda loop: attempt(loop.remove_signal_handler, 99999),
    "add_reader(bad fd)": lambda loop: attempt(loop.add_reader, "nofd", cb),
    "add_reader(negative fd)": lambda loop: attempt(loop.add_reader, -1, cb),
    # closed loop
    "call_soon on closed loop": lambda loop: closed(loop, lambda: loop.call_soon(cb)),
    "call_later on closed loop": lambda loop: closed(loop, lambda: loop.call_later(1, cb)),
    "call_at on closed loop": lambda loop: closed(loop, lambda: loop.call_at(1, cb)),
    "call_soon_threadsafe on closed loop": lambda loop: closed(loop, lambda: loop.call_soon_threadsafe(cb)),
    "create_task on closed loop": lambda loop: closed(loop, lambda: with_coro(loop.create_task)),
    "run_until_complete on closed loop": lambda loop: closed(loop, lambda: with_coro(loop.run_until_complete)),
    "run_forever on closed loop": lambda loop: closed(loop, loop.run_forever),
    "run_in_executor on closed loop": lambda loop: closed(loop, lambda: loop.run_in_executor(None, cb)),
    "add_reader on closed loop": lambda loop: closed(loop, lambda: loop.add_reader(0, cb)),
    "add_signal_handler on closed loop": lambda loop: closed(
        loop, lambda: loop.add_signal_handler(signal.SIGUSR1, cb)
    ),
    # reentrant runs, from a task step and from a plain callback
    "run_until_complete in a task": lambda loop: in_task(loop, lambda: with_coro(loop.run_until_complete)),
    "run_until_complete in a callback": lambda loop: in_callback(
        loop, lambda: with_coro(loop.run_until_complete)
    ),
    "run_forever in a task": lambda loop: in_task(loop, loop.run_forever),
    "run_forever in a callback": lambda loop: in_callback(loop, loop.run_forever),
    "another loop's run_until_complete in a task": lambda loop: in_task(loop, lambda: _other_loop_run(loop)),
    "another loop's run_until_complete in a callback": lambda loop: in_callback(
        loop, lambda: _other_loop_run(loop)
    ),
    "asyncio.run in a task": lambda loop: awaiting(loop, _nested_asyncio_run),
    "goloop.run in a task": lambda loop: awaiting(loop, _nested_goloop_run),
    "close() in a task": lambda loop: in_task(loop, loop.close),
    "close() in a callback": lambda loop: in_callback(loop, loop.close),
    # wrong thread (debug mode checks the thread)
    "call_soon from another thread (debug)": lambda loop: from_thread(loop, lambda: loop.call_soon(cb)),
    "call_later from another thread (debug)": lambda loop: from_thread(loop, lambda: loop.call_later(1, cb)),
    "call_at from another thread (debug)": lambda loop: from_thread(loop, lambda: loop.call_at(1, cb)),
    "create_task from another thread (debug)": lambda loop: from_thread(
        loop, lambda: with_coro(loop.create_task)
    ),
    "future.set_result from another thread (debug)": lambda loop: from_thread(
        loop, lambda: _future_with_callback(loop).set_result(1)
    ),
    "run_until_complete from another thread": lambda loop: from_thread(
        loop, lambda: with_coro(loop.run_until_complete), debug=False
    ),
    "close() from another thread": lambda loop: from_thread(loop, loop.close, debug=False),
    # bad awaits inside a task step
    "task awaits a future of another loop": lambda loop: awaiting(
        loop, lambda: _await_other(loop)
    ),
    "task awaits itself": lambda loop: awaiting(loop, _await_self),
    "task gets a bad yield": lambda loop: awaiting(loop, lambda: _wrap(_Bad())),
    "coroutine raises StopIteration": lambda loop: awaiting(loop, _raise_stop_iteration),
    "await of an int": lambda loop: awaiting(loop, _await_int),
    # servers and connections with bad arguments
    "create_server(host and sock)": lambda loop: awaiting(
        loop, lambda: loop.create_server(asyncio.Protocol, "127.0.0.1", 0, sock=_sock())
    ),
    "create_server(no host, port or sock)": lambda loop: awaiting(
        loop, lambda: loop.create_server(asyncio.Protocol)
    ),
    "create_server(datagram sock)": lambda loop: awaiting(
        loop, lambda: loop.create_server(asyncio.Protocol, sock=_sock(socket.SOCK_DGRAM))
    ),
    "create_server(ssl_handshake_timeout without ssl)": lambda loop: awaiting(
        loop, lambda: loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl_handshake_timeout=1)
    ),
    "create_server(ssl_shutdown_timeout without ssl)": lambda loop: awaiting(
        loop, lambda: loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl_shutdown_timeout=1)
    ),
    "create_connection(no host, port or sock)": lambda loop: awaiting(
        loop, lambda: loop.create_connection(asyncio.Protocol)
    ),
    "create_connection(host and sock)": lambda loop: awaiting(
        loop, lambda: loop.create_connection(asyncio.Protocol, "127.0.0.1", 1, sock=_sock())
    ),
    "create_connection(server_hostname without ssl)": lambda loop: awaiting(
        loop, lambda: loop.create_connection(asyncio.Protocol, "127.0.0.1", 1, server_hostname="x")
    ),
    "create_connection(ssl_handshake_timeout without ssl)": lambda loop: awaiting(
        loop, lambda: loop.create_connection(asyncio.Protocol, "127.0.0.1", 1, ssl_handshake_timeout=1)
    ),
    "create_connection(datagram sock)": lambda loop: awaiting(
        loop, lambda: loop.create_connection(asyncio.Protocol, sock=_sock(socket.SOCK_DGRAM))
    ),
    "create_connection(refused)": lambda loop: awaiting(
        loop, lambda: loop.create_connection(asyncio.Protocol, "127.0.0.1", _free_port())
    ),
    "create_datagram_endpoint(stream sock)": lambda loop: awaiting(
        loop, lambda: loop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=_sock())
    ),
    "create_datagram_endpoint(sock and address)": lambda loop: awaiting(
        loop,
        lambda: loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0), sock=_sock(socket.SOCK_DGRAM)
        ),
    ),
    "create_datagram_endpoint(nothing)": lambda loop: awaiting(
        loop, lambda: loop.create_datagram_endpoint(asyncio.DatagramProtocol)
    ),
    "connect_accepted_socket(datagram sock)": lambda loop: awaiting(
        loop, lambda: loop.connect_accepted_socket(asyncio.Protocol, _sock(socket.SOCK_DGRAM))
    ),
    "subprocess_exec(universal_newlines)": lambda loop: awaiting(
        loop, lambda: loop.subprocess_exec(asyncio.SubprocessProtocol, "true", universal_newlines=True)
    ),
    "subprocess_exec(shell=True)": lambda loop: awaiting(
        loop, lambda: loop.subprocess_exec(asyncio.SubprocessProtocol, "true", shell=True)
    ),
    "subprocess_shell(list)": lambda loop: awaiting(
        loop, lambda: loop.subprocess_shell(asyncio.SubprocessProtocol, ["true"])
    ),
    "subprocess_shell(bufsize=1)": lambda loop: awaiting(
        loop, lambda: loop.subprocess_shell(asyncio.SubprocessProtocol, "true", bufsize=1)
    ),
    # sock_* on blocking sockets (debug mode checks)
    "sock_recv on a blocking socket (debug)": lambda loop: _debug(loop) or awaiting(
        loop, lambda: loop.sock_recv(_connected_blocking_pair(), 10)
    ),
    "sock_recv_into on a blocking socket (debug)": lambda loop: _debug(loop) or awaiting(
        loop, lambda: loop.sock_recv_into(_connected_blocking_pair(), bytearray(10))
    ),
    "sock_sendall on a blocking socket (debug)": lambda loop: _debug(loop) or awaiting(
        loop, lambda: loop.sock_sendall(_connected_blocking_pair(), b"x")
    ),
    "sock_connect on a blocking socket (debug)": lambda loop: _debug(loop) or awaiting(
        loop, lambda: loop.sock_connect(_sock(blocking=True), ("127.0.0.1", 1))
    ),
    "sock_accept on a blocking socket (debug)": lambda loop: _debug(loop) or awaiting(
        loop, lambda: loop.sock_accept(_sock(blocking=True))
    ),
    "sock_sendfile on a datagram socket": lambda loop: awaiting(
        loop, lambda: loop.sock_sendfile(_sock(socket.SOCK_DGRAM), _file())
    ),
}


def _bad_timer_then_run(loop):
    """call_at('soon') is accepted; the loop fails computing its timeout."""
    handles = []
    accepted = attempt(lambda: handles.append(loop.call_at("soon", cb)))
    fut = loop.create_future()
    loop.call_soon(fut.set_result, None)
    ran = attempt(loop.run_until_complete, fut)
    handles[0].cancel()
    loop._scheduled.clear()     # the bad timer would fail every later run
    after = attempt(loop.run_until_complete, asyncio.sleep(0, "runs again"))
    return accepted, ran, after


def _raises_type_error():
    raise TypeError("raised by a callback")


def _debug(loop):
    loop.set_debug(True)


async def _wrap(aw):
    return await aw


async def _await_other(loop):
    return await _other_loop_future(loop)


def _future_with_callback(loop):
    fut = loop.create_future()
    fut.add_done_callback(lambda f: None)
    return fut


def _file():
    f = open(__file__, "rb")
    _SOCKETS.append(f)      # closed with the sockets
    return f


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _run_case(kind, case):
    loop = make_loop(kind)
    try:
        return case(loop)
    finally:
        if not loop.is_closed():
            # a misuse may have left tasks behind (e.g. create_task from
            # another thread): cancel them before closing
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()
        while _SOCKETS:
            _SOCKETS.pop().close()
        while _OTHER_LOOPS:
            _OTHER_LOOPS.pop().close()


# Misuses that stock asyncio accepts on some versions: they still must
# behave the same on goloop, but need not raise.
_MAY_SUCCEED = {
    *(["create_task(eager_start=True)"] if sys.version_info >= (3, 14) else []),
    "call_at(str), then run",
    "call_soon(non-callable), not debug",
    "call_later(non-callable), not debug",
    "call_soon(callback that raises), not debug",
}


@pytest.mark.parametrize("name", list(CASES))
def test_same_exception_as_asyncio(name):
    case = CASES[name]
    stock = _run_case("asyncio", case)
    ours = _run_case("goloop", case)
    if name not in _MAY_SUCCEED:
        assert stock[0] != "ok", f"stock asyncio accepted {name}: {stock}"
    assert ours == stock


def test_misuse_from_a_task_step_happens_on_a_goroutine():
    """The in-a-task cases above really run their misuse on a goroutine."""
    loop = make_loop("goloop")
    try:
        where = in_task(loop, lambda: goloop.current() is not None)
        refused = in_task(loop, lambda: with_coro(loop.run_until_complete))
    finally:
        loop.close()
    assert where == ("ok", "True")
    assert refused == (RuntimeError, "This event loop is already running")


@pytest.mark.parametrize("kind", KINDS)
def test_loop_still_works_after_each_kind_of_reentrant_misuse(kind):
    """After a refused reentrant call the loop runs on normally."""
    loop = make_loop(kind)
    try:
        for misuse in (
            lambda: with_coro(loop.run_until_complete),
            loop.run_forever,
            loop.close,
        ):
            outcome = in_task(loop, misuse)
            assert outcome[0] is RuntimeError
            outcome = in_callback(loop, misuse)
            assert outcome[0] is RuntimeError
        assert loop.run_until_complete(asyncio.sleep(0, "fine")) == "fine"
        assert not loop.is_running() and not loop.is_closed()
    finally:
        loop.close()
