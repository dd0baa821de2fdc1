"""goloop's SocketTransport construction and closing (csrc/loop/stream_life.c:
asyncio's _SelectorSocketTransport.__init__ chain, close and
_call_connection_lost done in C) leave a transport exactly as asyncio's own
methods leave it.

Each case builds two transports on one goloop loop with the same arguments:
one by the native constructor, one by running the running version's
_SelectorSocketTransport.__init__ on a SocketTransport instance (the class
and its slots are the same; only the constructor differs).  What a program or
asyncio's later code could read must then be equal: every attribute (slots
and the instance dict), the extra info, the callbacks scheduled with their
arguments and contexts, the loop's _transports entry, the server's
_attach calls, TCP_NODELAY and the exceptions a bad argument raises.
"""
import asyncio
import collections
import contextvars
import socket
import sys
import types
from asyncio import base_events, selector_events, trsock

import pytest

import goloop
from goloop import _transports

STOCK = selector_events._SelectorSocketTransport
STOCK_INIT = STOCK.__init__


def stock_transport(*args, **kwargs):
    tr = _transports.SocketTransport.__new__(_transports.SocketTransport)
    tr._sock = None
    STOCK_INIT(tr, *args, **kwargs)
    return tr


def attribute_names(tr):
    names = set(getattr(tr, "__dict__", {}))
    for cls in type(tr).__mro__:
        names.update(getattr(cls, "__slots__", ()))
    return sorted(n for n in names if n != "__dict__" and n != "__weakref__")


def describe(tr, value):
    """What may be compared of an attribute value between two transports."""
    if isinstance(value, types.MethodType) or type(value).__name__ == "builtin_function_or_method":
        owner = getattr(value, "__self__", None)
        return ("bound", value.__name__, "self" if owner is tr else repr(type(owner)))
    if isinstance(value, trsock.TransportSocket):
        return ("TransportSocket", value._sock is tr._sock)
    if isinstance(value, (collections.deque, bytearray)):
        return (type(value).__name__, list(value))
    if isinstance(value, socket.socket):
        return ("socket", value is tr._sock)
    if isinstance(value, dict):
        return {k: describe(tr, v) for k, v in value.items()}
    if isinstance(value, asyncio.AbstractEventLoop):
        return ("loop", value is asyncio.get_event_loop())
    if isinstance(value, contextvars.Context):
        return ("context", id(value))
    if isinstance(value, types.FunctionType):
        return ("function", value.__module__, value.__qualname__)
    if isinstance(value, (int, str, bool, type(None), tuple)):
        return value
    return ("object", type(value).__name__)


def snapshot(tr, loop, ready_before):
    state = {}
    for name in attribute_names(tr):
        try:
            state[name] = describe(tr, getattr(tr, name))
        except AttributeError:
            state[name] = "<unset>"
    scheduled = []
    for handle in list(loop._ready)[ready_before:]:
        args = tuple(describe(tr, a) for a in handle._args)
        scheduled.append((describe(tr, handle._callback), args, id(handle._context)))
    state["<scheduled>"] = scheduled
    state["<in _transports>"] = loop._transports.get(tr._sock_fd) is tr
    return state


class Protocol(asyncio.Protocol):
    pass


class Buffered(asyncio.BufferedProtocol):
    def get_buffer(self, n):
        return bytearray(100)


class Server:
    """Records what the transport tells its server."""

    def __init__(self):
        self.calls = []

    def _attach(self, *args):
        self.calls.append(("attach", len(args)))

    def _detach(self, *args):
        self.calls.append(("detach", len(args)))


def tcp_pair():
    listener = socket.create_server(("127.0.0.1", 0))
    a = socket.create_connection(listener.getsockname())
    b, _ = listener.accept()
    listener.close()
    a.setblocking(False)
    return a, b


def unix_pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    return a, b


def build_both(make_pair, **options):
    """Both transports' snapshots, after construction and after the loop ran
    what they scheduled."""
    results = []

    async def main():
        loop = asyncio.get_running_loop()
        for build in (stock_transport, _transports.SocketTransport):
            sock, peer = make_pair()
            protocol = options.get("protocol", Protocol)()
            server = Server() if options.get("server") else None
            waiter = loop.create_future() if options.get("waiter") else None
            kwargs = {}
            if "extra" in options:
                kwargs["extra"] = dict(options["extra"])
            context = None
            if sys.version_info >= (3, 15) and options.get("context"):
                context = contextvars.copy_context()
                kwargs["context"] = context
            ready_before = len(loop._ready)
            tr = build(loop, sock, protocol, waiter, server=server, **kwargs)
            first = snapshot(tr, loop, ready_before)
            if context is not None:
                first["<context is the one passed>"] = [h[2] == id(context) for h in first["<scheduled>"]]
                first["_context"] = first["_context"] == ("context", id(context))
            first["<scheduled>"] = [e[:2] for e in first["<scheduled>"]]
            first["<server calls>"] = list(server.calls) if server else None
            first["<nodelay>"] = (sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                                  if sock.family != socket.AF_UNIX else None)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            first["<waiter>"] = None if waiter is None else (waiter.done(), waiter.result())
            first["<reading>"] = tr.is_reading()
            tr.close()
            await asyncio.sleep(0)
            peer.close()
            results.append(first)

    goloop.run(main())
    return results


def without_addresses(state):
    """Ports differ between the two connections: compare their shapes."""
    extra = state.get("_extra")
    if isinstance(extra, dict):
        for key in ("sockname", "peername"):
            if isinstance(extra.get(key), tuple):
                extra[key] = ("address", len(extra[key]))
    return state


@pytest.mark.parametrize("pair", [tcp_pair, unix_pair], ids=["tcp", "unix"])
@pytest.mark.parametrize("options", [
    {},
    {"protocol": Buffered},
    {"server": True},
    {"waiter": True},
    {"extra": {"peername": ("1.2.3.4", 5)}},
    {"extra": {"custom": 1}, "server": True, "waiter": True, "context": True},
], ids=["plain", "buffered", "server", "waiter", "given-peername", "everything"])
def test_native_init_matches_asyncio(pair, options):
    stock, native = build_both(pair, **options)
    assert without_addresses(native) == without_addresses(stock)


def test_native_init_sets_nodelay_on_tcp():
    stock, native = build_both(tcp_pair)
    assert native["<nodelay>"] == stock["<nodelay>"] != 0


def test_patched_set_nodelay_is_honoured(monkeypatch):
    seen = []
    monkeypatch.setattr(base_events, "_set_nodelay", lambda sock: seen.append(sock.fileno()))

    async def main():
        sock, peer = tcp_pair()
        tr = _transports.SocketTransport(asyncio.get_running_loop(), sock, Protocol())
        assert seen == [sock.fileno()]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        tr.close()
        await asyncio.sleep(0)
        peer.close()

    goloop.run(main())


def test_socket_subclass_gets_asyncio_init():
    class MySocket(socket.socket):
        pass

    async def main():
        a, b = socket.socketpair()
        sock = MySocket(a.family, a.type, a.proto, a.detach())
        sock.setblocking(False)
        tr = _transports.SocketTransport(asyncio.get_running_loop(), sock, Protocol())
        assert tr._sock is sock and tr.get_extra_info("socket") is not None
        tr.close()
        await asyncio.sleep(0)
        b.close()

    goloop.run(main())


@pytest.mark.parametrize("args, kwargs", [
    ((), {}),
    (("loop-only",), {}),
    ((None, None, None, None, None, None, None, None), {}),
    ((), {"bogus": 1}),
], ids=["none", "too-few", "too-many", "unknown-keyword"])
def test_bad_arguments_raise_as_asyncio(args, kwargs):
    def outcome(build):
        try:
            build(*args, **kwargs)
        except Exception as exc:
            return type(exc)
        return None

    assert outcome(_transports.SocketTransport) is outcome(stock_transport) is TypeError


def test_closed_socket_raises_as_asyncio():
    def outcome(build):
        async def main():
            sock, peer = tcp_pair()
            sock.close()
            try:
                build(asyncio.get_running_loop(), sock, Protocol())
            except Exception as exc:
                return type(exc), getattr(exc, "errno", None)
            finally:
                peer.close()
            return None

        return goloop.run(main())

    assert outcome(_transports.SocketTransport) == outcome(stock_transport)


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="asyncio checks the fd of a new transport from 3.12 on")
def test_fd_of_an_open_transport_is_refused_as_asyncio():
    """_make_socket_transport refuses a socket whose fd an open transport
    uses (goloop sees a free fd without asyncio's KeyError, and leaves the
    rest to asyncio's check)."""
    async def main():
        loop = asyncio.get_running_loop()
        sock, peer = unix_pair()
        tr = loop._make_socket_transport(sock, Protocol())
        twin = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())
        try:
            with pytest.raises(RuntimeError, match=f"File descriptor .* is used by transport"):
                loop._make_socket_transport(twin, Protocol())
            tr.close()      # closing: the fd may get a new transport
            second = loop._make_socket_transport(twin, Protocol())
            second.abort()
        finally:
            twin.detach()
        await asyncio.sleep(0)
        peer.close()

    goloop.run(main())


# ---- closing ---------------------------------------------------------------

class Failing(asyncio.Protocol):
    def connection_lost(self, exc):
        raise LookupError("connection_lost failed on purpose")


class FailingSocket:
    """Stands in for a transport's socket whose close() fails."""

    def __init__(self, sock):
        self.sock = sock

    def close(self):
        self.sock.close()
        raise OSError(9, "close failed on purpose")


def close_both(scenario):
    """Run scenario(transport, close, lost) with asyncio's close and
    _call_connection_lost and then with goloop's, each on a fresh transport;
    their records must match."""
    records = []

    async def main():
        loop = asyncio.get_running_loop()
        for close, lost in ((lambda tr: STOCK.close(tr), lambda tr, exc: STOCK._call_connection_lost(tr, exc)),
                            (lambda tr: tr.close(), lambda tr, exc: tr._call_connection_lost(exc))):
            record = await scenario(loop, close, lost)
            records.append(record)

    goloop.run(main())
    return records


def state_of(tr, loop, ready_before):
    state = without_addresses(snapshot(tr, loop, ready_before))
    state["<scheduled>"] = [e[:2] for e in state["<scheduled>"]]
    return state


def outcome_of(call):
    try:
        call()
    except BaseException as exc:
        context = exc.__context__
        return (type(exc).__name__, str(exc),
                None if context is None else (type(context).__name__, str(context)))
    return None


@pytest.mark.parametrize("protocol", [Protocol, Failing], ids=["plain", "connection_lost-raises"])
@pytest.mark.parametrize("server", [False, True], ids=["client", "server"])
def test_close_then_connection_lost_match_asyncio(protocol, server):
    async def scenario(loop, close, lost):
        sock, peer = tcp_pair()
        srv = Server() if server else None
        tr = _transports.SocketTransport(loop, sock, protocol(), server=srv)
        await asyncio.sleep(0)
        ready_before = len(loop._ready)
        close(tr)
        after_close = state_of(tr, loop, ready_before)
        second = outcome_of(lambda: close(tr))
        # what close() scheduled, run by hand: asyncio's _call_connection_lost
        result = outcome_of(lambda: lost(tr, None))
        after_lost = state_of(tr, loop, ready_before)
        record = (after_close, second, result, after_lost, sock.fileno(),
                  None if srv is None else srv.calls)
        await asyncio.sleep(0)
        peer.close()
        return record

    stock, native = close_both(scenario)
    assert native == stock


def test_close_with_data_queued_matches_asyncio():
    async def scenario(loop, close, lost):
        sock, peer = unix_pair()
        tr = _transports.SocketTransport(loop, sock, Protocol())
        await asyncio.sleep(0)
        while not tr.get_write_buffer_size():
            tr.write(b"x" * 65536)
        ready_before = len(loop._ready)
        close(tr)
        record = state_of(tr, loop, ready_before)
        record["_buffer"] = None           # how much the kernel took varies
        tr.abort()
        await asyncio.sleep(0)
        peer.close()
        return record

    stock, native = close_both(scenario)
    assert native == stock


@pytest.mark.parametrize("failing", ["socket", "both"])
def test_connection_lost_errors_chain_as_asyncio(failing):
    """An exception in the finally blocks replaces the one propagating, with
    it as __context__, as Python's try/finally does."""
    async def scenario(loop, close, lost):
        sock, peer = unix_pair()
        tr = _transports.SocketTransport(loop, sock, Failing() if failing == "both" else Protocol())
        await asyncio.sleep(0)
        tr._sock = FailingSocket(sock)
        waiter = loop.create_future()
        tr._empty_waiter = waiter
        result = outcome_of(lambda: lost(tr, None))
        record = (result, state_of(tr, loop, len(loop._ready)), waiter.done()
                  and type(waiter.exception()).__name__)
        tr._sock = None                   # its close() already ran
        peer.close()
        return record

    stock, native = close_both(scenario)
    assert native == stock


def test_empty_waiter_learns_the_connection_is_lost():
    async def scenario(loop, close, lost):
        sock, peer = unix_pair()
        tr = _transports.SocketTransport(loop, sock, Protocol())
        await asyncio.sleep(0)
        waiter = loop.create_future()       # a sendfile waiting for the buffer to drain
        tr._empty_waiter = waiter
        result = outcome_of(lambda: lost(tr, None))
        exc = waiter.exception() if waiter.done() else None
        record = (result, type(exc).__name__, str(exc))
        peer.close()
        return record

    stock, native = close_both(scenario)
    assert native == stock
    assert native[1] == "ConnectionError"


def test_closing_methods_with_wrong_arguments_raise_as_asyncio():
    async def main():
        sock, peer = unix_pair()
        tr = _transports.SocketTransport(asyncio.get_running_loop(), sock, Protocol())
        for call in (lambda: tr.close(1), lambda: tr._call_connection_lost(),
                     lambda: tr._call_connection_lost(None, 2)):
            with pytest.raises(TypeError):
                call()
        tr.abort()
        await asyncio.sleep(0)
        peer.close()

    goloop.run(main())


def test_transports_table_entry_goes_with_the_transport():
    """The loop's _transports entry the native constructor makes is a
    WeakValueDictionary entry like asyncio's: found while the transport
    lives, gone (data included) once it is collected."""
    import gc

    async def main():
        loop = asyncio.get_running_loop()
        sock, peer = unix_pair()
        fd = sock.fileno()
        tr = _transports.SocketTransport(loop, sock, Protocol())
        assert loop._transports[fd] is tr and fd in loop._transports
        assert loop._transports.get(fd) is tr
        assert type(loop._transports.data[fd]).__name__ == "KeyedRef"
        assert loop._transports.data[fd].key == fd
        tr.close()
        await asyncio.sleep(0)
        del tr
        gc.collect()
        assert fd not in loop._transports.data
        assert loop._transports.get(fd) is None
        peer.close()

    goloop.run(main())


@pytest.mark.parametrize("state", ["reading", "paused", "closing"])
def test_add_reader_matches_asyncio(state):
    """_add_reader (what starts and resumes reading) watches the fd unless
    the transport is paused or closing, as asyncio's; 3.15: in the
    transport's context."""
    def reader_of(loop, fd):
        try:
            key = loop._selector.get_key(fd)
        except KeyError:
            return None
        reader = key.data[0]
        return None if reader is None else (reader._callback, reader._args, reader._context)

    async def main():
        loop = asyncio.get_running_loop()
        results = []
        for add in (lambda tr, *a: selector_events._SelectorTransport._add_reader(tr, *a),
                    lambda tr, *a: tr._add_reader(*a)):
            sock, peer = unix_pair()
            tr = _transports.SocketTransport(loop, sock, Protocol())
            await asyncio.sleep(0)
            loop._remove_reader(sock.fileno())
            tr._paused = state == "paused"
            tr._closing = state == "closing"

            def marker(*args):
                pass

            add(tr, sock.fileno(), marker, 1, 2)
            found = reader_of(loop, sock.fileno())
            if found is not None:
                callback, args, context = found
                expected_context = getattr(tr, "_context", None)
                found = (callback is marker, args,
                         expected_context is None or context is expected_context)
            results.append(found)
            tr._paused = tr._closing = False
            tr.abort()
            await asyncio.sleep(0)
            peer.close()
        return results

    stock, native = goloop.run(main())
    assert native == stock
    assert (native is None) == (state != "reading")
