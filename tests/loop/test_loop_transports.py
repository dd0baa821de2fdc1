"""goloop's socket transport (goloop/_transports.py, csrc/loop/stream.c):
every stream connection gets it, and its native read and write paths do
what asyncio's Python ones do.  Each scenario runs on the stock loop and on
goloop and the two records are compared."""
import asyncio
import contextvars
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import warnings
from asyncio import selector_events

import pytest

import goloop
from goloop import _transports
from loop_helpers import normalize, run_both, run_on

TLS_TIMEOUT = 20


class Recorder(asyncio.Protocol):
    def __init__(self):
        self.events = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.events.append(("data", data))

    def eof_received(self):
        self.events.append(("eof",))

    def pause_writing(self):
        self.events.append(("pause_writing",))

    def resume_writing(self):
        self.events.append(("resume_writing",))

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc)))
        if not self.lost.done():
            self.lost.set_result(None)


def merged(events):
    """Consecutive data events joined: how the bytes were split is the
    kernel's business, not the loop's."""
    out = []
    for e in events:
        if e[0] == "data" and out and out[-1][0] == "data":
            out[-1] = ("data", out[-1][1] + e[1])
        else:
            out.append(e)
    return out


async def connected_pair(protocol_factory=Recorder):
    """(transport, protocol, peer): a loop transport over TCP and the
    blocking peer socket at the other end."""
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(protocol_factory, *listener.getsockname()), 10)
        peer, _ = listener.accept()
    finally:
        listener.close()
    peer.settimeout(10)
    return transport, protocol, peer


def recv_exactly(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "peer closed early"
        data += chunk
    return bytes(data)


def make_cert(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    return str(cert), str(key)


# ---- which connections get goloop's transport --------------------------------

def socket_transport(writer):
    """The socket transport under a stream (under its TLS layer, if any)."""
    loop = asyncio.get_running_loop()
    return loop._transports[writer.get_extra_info("socket").fileno()]


def test_every_stream_connection_gets_goloops_transport(tmp_path):
    cert, key = make_cert(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cert)
    path = os.path.join(tempfile.mkdtemp(dir="/tmp"), "s")

    async def main():
        loop = asyncio.get_running_loop()
        accepted = []

        async def handle(reader, writer):
            accepted.append(type(socket_transport(writer)).__name__)
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        kinds = {}
        tcp = await asyncio.start_server(handle, "127.0.0.1", 0)
        unix = await asyncio.start_unix_server(handle, path)
        tls = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        async with tcp, unix, tls:
            port = tcp.sockets[0].getsockname()[1]
            tls_port = tls.sockets[0].getsockname()[1]
            for name, opener in [
                ("tcp", lambda: asyncio.open_connection("127.0.0.1", port)),
                ("unix", lambda: asyncio.open_unix_connection(path)),
                ("tls", lambda: asyncio.open_connection("127.0.0.1", tls_port, ssl=client_ctx,
                                                        server_hostname="localhost")),
            ]:
                reader, writer = await asyncio.wait_for(opener(), TLS_TIMEOUT)
                kinds[name] = type(socket_transport(writer))    # before the server closes
                writer.write(name.encode())
                assert await asyncio.wait_for(reader.read(100), TLS_TIMEOUT) == name.encode()
                writer.close()
                await writer.wait_closed()
            # connect_accepted_socket: a socket accepted outside the loop
            listener = socket.create_server(("127.0.0.1", 0))
            client = socket.create_connection(listener.getsockname())
            conn, _ = listener.accept()
            transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, conn)
            kinds["accepted_socket"] = type(transport)
            transport.close()
            client.close()
            listener.close()
        kinds["server_side"] = sorted(set(accepted))
        return kinds

    stock, ours = run_both(main)
    for name in ("tcp", "unix", "tls", "accepted_socket"):
        assert stock[name] is selector_events._SelectorSocketTransport, name
        assert ours[name] is _transports.SocketTransport, name
    assert ours["server_side"] == ["SocketTransport"]
    assert issubclass(_transports.SocketTransport, asyncio.Transport)


# ---- the accept path -----------------------------------------------------------

CONN = contextvars.ContextVar("CONN", default=None)


async def echo_once(port, payload=b"x", read=True):
    """Connect, send payload, read the reply up to EOF or len(payload) (if
    read): the bytes read, or the exception's type."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    try:
        writer.write(payload)
        return await asyncio.wait_for(reader.read(len(payload)), 10) if read else None
    except OSError as e:
        return type(e)
    finally:
        writer.close()


class ContextEcho(asyncio.Protocol):
    """Echoes, and records which connection's ContextVar value each of its
    callbacks sees: the factory sets it."""

    seen = None                      # set per run: a list
    done = None                      # set per run: {number: future}

    def __init__(self):
        self.number = len(self.done) + 1
        self.seen.append(("factory", self.number, CONN.get()))
        self.lost = self.done[self.number] = asyncio.get_running_loop().create_future()
        CONN.set(self.number)

    def connection_made(self, transport):
        self.transport = transport
        self.seen.append(("made", self.number, CONN.get()))

    def data_received(self, data):
        self.seen.append(("data", self.number, CONN.get()))
        self.transport.write(data)

    def connection_lost(self, exc):
        self.seen.append(("lost", self.number, CONN.get()))
        self.lost.set_result(None)


def test_each_accepted_connection_runs_in_a_context_of_its_own_as_in_asyncio():
    """asyncio makes each accepted connection's protocol and transport in a
    task, so in a copy of the server's context; goloop makes them without a
    task (goloop/_transports.py: accept_connection), in a copy as well: what
    one connection's factory sets is seen by its own callbacks, never by the
    next connection's."""
    async def main():
        ContextEcho.seen, ContextEcho.done = [], {}
        CONN.set("server")
        server = await asyncio.get_running_loop().create_server(ContextEcho, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            replies = []
            for number in (1, 2, 3):
                replies.append(await echo_once(port))
                await asyncio.wait_for(ContextEcho.done[number], 10)
        return replies, ContextEcho.seen

    stock, ours = run_both(main)
    assert stock == ours
    replies, seen = ours
    assert replies == [b"x"] * 3
    for number in (1, 2, 3):
        assert [e for e in seen if e[1] == number] == [
            ("factory", number, "server"), ("made", number, number),
            ("data", number, number), ("lost", number, number)]


@pytest.mark.parametrize("debug", [False, True])
def test_a_protocol_factory_that_raises_drops_that_connection_only_as_in_asyncio(debug):
    """Outside debug mode the connection whose factory raised is closed and
    nothing is reported; in debug mode the exception handler hears of it
    (asyncio's own accept path, which goloop takes in debug mode, where the
    report keeps the socket open until the garbage collector runs).  The
    next connection is served."""
    async def main():
        reports = []
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: reports.append((context["message"], type(context.get("exception")))))
        calls = []

        def factory():
            calls.append(None)
            if len(calls) == 1:
                raise ValueError("no protocol for you")
            return Echo()

        class Echo(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, data):
                self.transport.write(data)

        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            first = await echo_once(port, read=not debug)
            for _ in range(50):              # the report, if any, comes with the next iteration
                await asyncio.sleep(0)
            second = await echo_once(port, b"again")
        return first, second, reports

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)    # asyncio leaves the socket to the GC
        stock, ours = run_both(main, debug=debug)
    assert stock == ours
    first, second, reports = ours
    assert first in ((None,) if debug else (b"", ConnectionResetError)) and second == b"again"
    assert reports == ([("Error on transport creation for incoming connection", ValueError)] if debug else [])


def test_a_protocol_factory_that_closes_its_server_as_in_asyncio():
    """goloop runs the factory inside the accept callback, asyncio after it:
    a factory that closes the server must not leave goloop accepting on the
    closed socket (which would report an error asyncio does not).  (The
    connection itself is dropped on both: the closed server refuses the
    transport.  asyncio leaves its socket to the garbage collector, goloop
    closes it.)"""
    async def main():
        loop = asyncio.get_running_loop()
        reports = []
        loop.set_exception_handler(lambda loop, context: reports.append(context["message"]))
        servers = []

        class Closer(asyncio.Protocol):
            def __init__(self):
                servers[0].close()

        servers.append(await loop.create_server(Closer, "127.0.0.1", 0))
        await echo_once(servers[0].sockets[0].getsockname()[1], read=False)
        await asyncio.wait_for(servers[0].wait_closed(), 10)
        for _ in range(20):
            await asyncio.sleep(0)
        return reports, servers[0].is_serving()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        stock, ours = run_both(main)
    assert stock == ours == ([], False)


def test_a_listening_socket_of_a_socket_subclass_accepts_its_own_way():
    """create_server(sock=...) with a socket.socket subclass: its accept()
    is what asyncio calls, and goloop calls it too."""
    class CountingSocket(socket.socket):
        accepts = 0

        def accept(self):
            CountingSocket.accepts += 1
            return super().accept()

    async def main():
        CountingSocket.accepts = 0
        listener = CountingSocket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))

        async def handle(reader, writer):
            writer.write(await reader.read(1))
            writer.close()

        server = await asyncio.start_server(handle, sock=listener)
        async with server:
            reply = await echo_once(listener.getsockname()[1])
        return reply, CountingSocket.accepts >= 1

    assert run_both(main) == ((b"x", True), (b"x", True))


# ---- the read path -------------------------------------------------------------

@pytest.mark.parametrize("where", ["instance", "class"])
def test_reads_take_at_most_max_size(where, monkeypatch):
    """asyncio reads max_size bytes at most; a transport's own max_size and a
    change of the class's (after the native path has read it) both count."""
    async def main():
        transport, protocol, peer = await connected_pair()
        try:
            peer.sendall(b"a" * 64)
            await asyncio.sleep(0.05)
            if where == "instance":
                transport.max_size = 5
            else:
                monkeypatch.setattr(selector_events._SelectorSocketTransport, "max_size", 5)
                transport.is_reading()          # a lookup in the class: it has a version again
            peer.sendall(b"b" * 64)
            for _ in range(200):
                if sum(len(e[1]) for e in protocol.events if e[0] == "data") == 128:
                    break
                await asyncio.sleep(0.01)
            sizes = [len(e[1]) for e in protocol.events if e[0] == "data"]
            return sizes[0], max(sizes[1:]), sum(sizes)
        finally:
            monkeypatch.undo()
            transport.close()
            peer.close()

    stock, ours = run_both(main)
    assert stock == ours == (64, 5, 128)


def test_buffered_protocol_reads_into_its_buffer_and_sees_eof():
    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(10)
            self.got = bytearray()
            self.events = []
            self.lost = asyncio.get_running_loop().create_future()

        def get_buffer(self, hint):
            self.events.append(("get_buffer", hint))
            return memoryview(self.buf)[:7]

        def buffer_updated(self, n):
            self.got += self.buf[:n]

        def eof_received(self):
            self.events.append(("eof",))

        def connection_lost(self, exc):
            self.events.append(("lost", exc))
            self.lost.set_result(None)

    async def main():
        transport, protocol, peer = await connected_pair(Buffered)
        peer.sendall(b"0123456789" * 5)
        peer.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(protocol.lost, 10)
        peer.close()
        return bytes(protocol.got), sorted(set(protocol.events))

    stock, ours = run_both(main)
    assert stock == ours
    assert ours[0] == b"0123456789" * 5


@pytest.mark.parametrize("buffer", ["read-only", "empty", "raises"])
def test_a_bad_get_buffer_reaches_the_exception_handler_as_in_asyncio(buffer):
    class Bad(asyncio.BufferedProtocol):
        def __init__(self):
            self.lost = asyncio.get_running_loop().create_future()

        def get_buffer(self, hint):
            if buffer == "raises":
                raise ZeroDivisionError("no buffer")
            return bytes(10) if buffer == "read-only" else bytearray()

        def buffer_updated(self, n):
            pass

        def connection_lost(self, exc):
            self.lost.set_result(type(exc))

    async def main():
        seen = []
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: seen.append((context["message"], type(context.get("exception")),
                                               normalize(str(context.get("exception"))))))
        transport, protocol, peer = await connected_pair(Bad)
        peer.sendall(b"x")
        lost = await asyncio.wait_for(protocol.lost, 10)
        peer.close()
        return seen, lost

    stock, ours = run_both(main)
    assert stock == ours
    assert len(ours[0]) == 1


def test_a_data_received_that_raises_reaches_the_exception_handler_as_in_asyncio():
    class Raises(Recorder):
        def data_received(self, data):
            super().data_received(data)
            raise ValueError("bad data")

    async def main():
        seen = []
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: seen.append((context["message"], type(context.get("exception")))))
        transport, protocol, peer = await connected_pair(Raises)
        peer.sendall(b"x")
        await asyncio.wait_for(protocol.lost, 10)
        peer.close()
        return seen, merged(protocol.events), transport.is_closing()

    stock, ours = run_both(main)
    assert stock == ours
    assert ours[0] == [("Fatal error: protocol.data_received() call failed.", ValueError)]


# ---- the write path ------------------------------------------------------------

def test_write_refuses_what_asyncio_refuses():
    async def main():
        transport, protocol, peer = await connected_pair()
        results = []
        for call in (lambda: transport.write("text"), lambda: transport.write(),
                     lambda: transport.write(b"a", b"b"), lambda: transport.write(data=b"kw"),
                     lambda: transport.write(bytearray(b"ba")), lambda: transport.write(b""),
                     lambda: transport.write_eof(), lambda: transport.write(b"after eof")):
            try:
                results.append(("ok", call()))
            except Exception as e:
                results.append((type(e).__name__, normalize(str(e))))
        got = recv_exactly(peer, 4)
        assert peer.recv(10) == b""             # the EOF
        transport.close()
        await asyncio.wait_for(protocol.lost, 10)
        peer.close()
        return results, got

    stock, ours = run_both(main)
    assert stock == ours
    assert ours[1] == b"kwba"


def test_a_write_the_socket_cannot_take_is_queued_and_flushed_with_flow_control():
    async def main():
        transport, protocol, peer = await connected_pair()
        transport.set_write_buffer_limits(high=64 * 1024)
        blob = os.urandom(8 * 1024 * 1024)
        transport.write(blob)                   # more than the socket buffers hold
        queued = transport.get_write_buffer_size()
        assert queued > 0
        assert protocol.events == [("pause_writing",)]
        got = await asyncio.get_running_loop().run_in_executor(None, recv_exactly, peer, len(blob))
        for _ in range(500):
            if transport.get_write_buffer_size() == 0 and ("resume_writing",) in protocol.events:
                break
            await asyncio.sleep(0.01)
        transport.write(b"tail")
        assert recv_exactly(peer, 4) == b"tail"
        transport.close()
        await asyncio.wait_for(protocol.lost, 10)
        peer.close()
        return got == blob, merged(protocol.events)

    stock, ours = run_both(main)
    assert stock == ours == (True, [("pause_writing",), ("resume_writing",), ("lost", type(None))])


def test_a_write_to_a_reset_peer_loses_the_connection_as_in_asyncio():
    async def main():
        seen = []
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: seen.append(context["message"]))
        transport, protocol, peer = await connected_pair()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        peer.close()
        await asyncio.wait_for(protocol.lost, 10)  # the reset arrives as a read error
        transport.write(b"after")               # asyncio counts, then warns
        return merged(protocol.events), seen, transport.is_closing()

    stock, ours = run_both(main)
    assert stock == ours
    assert ours[0] == [("lost", ConnectionResetError)]


def test_loop_sendfile_goes_out_by_os_sendfile(tmp_path, monkeypatch):
    """loop.sendfile() on goloop's transport takes asyncio's native path
    (os.sendfile on the transport's socket, reading paused, the write
    queue empty first), not the read-and-write fallback."""
    data = os.urandom(300_000)
    path = tmp_path / "payload"
    path.write_bytes(data)
    calls = []
    real_sendfile = os.sendfile

    def counting_sendfile(out_fd, in_fd, offset, count):
        calls.append(count)
        return real_sendfile(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", counting_sendfile)

    async def main():
        calls.clear()
        loop = asyncio.get_running_loop()
        transport, protocol, peer = await connected_pair()
        transport.write(b"head")                 # queued or sent: sendfile waits for it
        with open(path, "rb") as f:
            sending = asyncio.ensure_future(loop.sendfile(transport, f))
            received = await loop.run_in_executor(None, recv_exactly, peer, 4 + len(data))
            sent = await asyncio.wait_for(sending, 10)
        transport.write(b"tail")
        tail = await loop.run_in_executor(None, recv_exactly, peer, 4)
        transport.close()
        await asyncio.wait_for(protocol.lost, 10)
        peer.close()
        return sent, received == b"head" + data, tail, bool(calls), merged(protocol.events)

    stock, ours = run_both(main)
    assert stock == ours
    assert ours[:4] == (len(data), True, b"tail", True)


def test_transport_and_buffer_are_freed():
    """No reference to a closed transport, its protocol or the data stays
    behind in the native paths."""
    import gc
    import weakref

    async def main():
        refs = []
        for _ in range(3):
            transport, protocol, peer = await connected_pair()
            data = bytes(1000)
            transport.write(data)
            peer.sendall(b"y" * 1000)
            recv_exactly(peer, 1000)
            await asyncio.sleep(0.02)
            transport.close()
            await asyncio.wait_for(protocol.lost, 10)
            peer.close()
            refs.append((weakref.ref(transport), weakref.ref(protocol), sys.getrefcount(data)))
            del transport, protocol
        await asyncio.sleep(0)
        gc.collect()
        return [(t() is None, p() is None, n) for t, p, n in refs]

    stock, ours = run_both(main)
    assert stock == ours
    assert all(t and p for t, p, _ in ours)


def test_goloop_run_uses_it():
    async def main():
        transport, protocol, peer = await connected_pair()
        kind = type(transport)
        transport.close()
        peer.close()
        return kind

    assert goloop.run(main()) is _transports.SocketTransport
    assert run_on("asyncio", main) is selector_events._SelectorSocketTransport


# ---- UDP -------------------------------------------------------------------------

class DatagramRecorder(asyncio.DatagramProtocol):
    def __init__(self, pause_after=None):
        self.events = []
        self.pause_after = pause_after
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.events.append(("datagram", data, addr[0]))
        if self.pause_after is not None and len(self.events) == self.pause_after:
            self.transport.pause_reading()
            self.events.append(("paused",))

    def error_received(self, exc):
        self.events.append(("error", type(exc)))

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc)))
        self.lost.set_result(None)


async def settle(protocol, n, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if len(protocol.events) >= n:
            return
        await asyncio.sleep(0.01)


def test_every_datagram_endpoint_gets_goloops_transport():
    async def main():
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                           local_addr=("127.0.0.1", 0))
        kind = type(transport)
        transport.close()
        return kind

    stock, ours = run_both(main)
    assert stock is selector_events._SelectorDatagramTransport
    assert ours is _transports.DatagramTransport
    # (3.12+ make asyncio's a DatagramTransport; 3.11's is not one)
    assert issubclass(ours, asyncio.DatagramTransport) == issubclass(stock, asyncio.DatagramTransport)


def test_datagrams_both_ways_connected_and_unconnected():
    async def main():
        loop = asyncio.get_running_loop()
        server, sp = await loop.create_datagram_endpoint(DatagramRecorder, local_addr=("127.0.0.1", 0))
        addr = server.get_extra_info("sockname")
        client, cp = await loop.create_datagram_endpoint(DatagramRecorder, remote_addr=addr)
        client.sendto(b"one")                     # connected: send()
        client.sendto(bytearray(b"two"), None)
        client.sendto(memoryview(b"three"))
        await settle(sp, 3)
        for _, data, _ in list(sp.events):
            server.sendto(data.upper(), client.get_extra_info("sockname"))   # unconnected: sendto()
        await settle(cp, 3)
        results = []
        for call in (lambda: client.sendto(b"x", ("127.0.0.1", 1)),      # not the connected address
                     lambda: client.sendto("text"),
                     lambda: server.sendto(b"x", "not an address"),
                     lambda: server.sendto(b"x")):                        # no address, unconnected
            try:
                results.append(("ok", call()))
            except Exception as e:
                results.append((type(e).__name__, re.sub(r"\d{4,5}\)", "PORT)", str(e))))
        await asyncio.sleep(0.05)
        client.close()
        server.close()
        await asyncio.wait_for(asyncio.gather(sp.lost, cp.lost), 5)
        return sp.events, cp.events, results

    stock, ours = run_both(main)
    assert stock == ours
    assert [e[1] for e in ours[1][:3]] == [b"ONE", b"TWO", b"THREE"]


def test_a_refused_datagram_reaches_error_received():
    async def main():
        loop = asyncio.get_running_loop()
        spare = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        spare.bind(("127.0.0.1", 0))
        addr = spare.getsockname()
        spare.close()                             # nobody listens there now
        client, cp = await loop.create_datagram_endpoint(DatagramRecorder, remote_addr=addr)
        client.sendto(b"anyone?")
        await settle(cp, 1)
        client.sendto(b"again")                   # the ICMP error surfaces on a later call
        await settle(cp, 2)
        client.close()
        await asyncio.wait_for(cp.lost, 5)
        return cp.events

    stock, ours = run_both(main)
    assert stock == ours
    assert ("error", ConnectionRefusedError) in ours


def test_a_burst_of_datagrams_arrives_whole_and_pause_stops_the_drain():
    async def main():
        loop = asyncio.get_running_loop()
        server, sp = await loop.create_datagram_endpoint(lambda: DatagramRecorder(pause_after=5),
                                                         local_addr=("127.0.0.1", 0))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(50):
            sender.sendto(b"%d" % i, server.get_extra_info("sockname"))
        await asyncio.sleep(0.2)
        seen_while_paused = len(sp.events)
        server.resume_reading()
        await settle(sp, 51)
        sender.close()
        server.close()
        await asyncio.wait_for(sp.lost, 5)
        return seen_while_paused, [e[1] for e in sp.events if e[0] == "datagram"]

    if sys.version_info < (3, 12):
        pytest.skip("datagram transports can pause reading from Python 3.12")
    stock, ours = run_both(main)
    assert stock == ours
    assert ours[0] == 6                          # five datagrams and the pause
    assert ours[1] == [b"%d" % i for i in range(50)]


def test_broadcast_option_reaches_the_socket():
    async def main():
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                           local_addr=("127.0.0.1", 0),
                                                           allow_broadcast=True)
        on = transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
        transport.close()
        return on

    stock, ours = run_both(main)
    assert stock == ours != 0


# ---- pipes -----------------------------------------------------------------------

def test_subprocess_output_and_read_pipes_go_through_goloops_pipe_transport():
    async def main():
        loop = asyncio.get_running_loop()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdout.write('x' * 300000); sys.stderr.write('err')",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        kind = type(proc._transport.get_pipe_transport(1))
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        r, w = os.pipe()

        class Reader(Recorder):
            def data_received(self, data):
                super().data_received(data)
                if data.startswith(b"boom"):
                    raise ValueError("boom")

        seen = []
        loop.set_exception_handler(lambda loop, context: seen.append(type(context.get("exception"))))
        transport, protocol = await loop.connect_read_pipe(Reader, os.fdopen(r, "rb", 0))
        transport.max_size = 4
        os.write(w, b"hello pipe")
        await asyncio.sleep(0.05)
        os.write(w, b"boom")
        await asyncio.sleep(0.05)
        os.close(w)
        await asyncio.wait_for(protocol.lost, 10)
        chunks = [len(e[1]) for e in protocol.events if e[0] == "data"]
        return kind.__name__, len(out), err, max(chunks), merged(protocol.events), seen

    stock, ours = run_both(main)
    assert stock[0] == "_UnixReadPipeTransport" and ours[0] == "ReadPipeTransport"
    assert stock[1:] == ours[1:]
    assert ours[1:4] == (300000, b"err", 4)
    assert ours[5] == [ValueError]


def test_the_native_halves_refuse_what_is_not_their_transport():
    """Called on anything but goloop's transport of their kind, the native
    methods raise a TypeError (they read that class's slots)."""
    from goloop import _goloop

    calls = [lambda: _goloop.SocketTransportCore()._read_ready(),
             lambda: _goloop.SocketTransportCore().write(b"x"),
             lambda: _goloop.DatagramTransportCore().sendto(b"x"),
             lambda: _goloop.DatagramTransportCore()._read_ready(),
             lambda: _goloop.ReadPipeTransportCore()._read_ready(),
             lambda: _goloop._setup_transports(1, 2)]
    for call in calls:
        with pytest.raises(TypeError):
            call()


class SmallBuffer(asyncio.BufferedProtocol):
    """A BufferedProtocol with a 1000-byte buffer that notes, for each
    buffer_updated, the loop iteration it ran in (a call_soon chain counts
    them); pause_after: pause reading after that many bytes."""

    def __init__(self, pause_after=None):
        self.buffer = bytearray(1000)
        self.data = bytearray()
        self.iterations = []
        self.pause_after = pause_after
        self.ticks = 0
        self.got = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        loop = asyncio.get_running_loop()

        def tick():
            self.ticks += 1
            if not self.transport.is_closing():
                loop.call_soon(tick)
        loop.call_soon(tick)

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        self.data += self.buffer[:nbytes]
        self.iterations.append(self.ticks)
        if self.pause_after is not None and len(self.data) >= self.pause_after:
            self.transport.pause_reading()
            if not self.got.done():
                self.got.set_result(None)
        elif len(self.data) >= 20000 and not self.got.done():
            self.got.set_result(None)


@pytest.mark.parametrize("pause_after", [None, 3000], ids=["reading", "paused-in-callback"])
def test_a_read_that_fills_the_buffer_is_followed_by_another(pause_after):
    """goloop reads again, up to 8 times per readiness, while a read filled
    the protocol's buffer and the transport still reads (libuv's and
    uvloop's rule); pause_reading() in the callback stops it at once."""
    async def main():
        transport, protocol, peer = await connected_pair(lambda: SmallBuffer(pause_after))
        await asyncio.sleep(0.05)            # connection_made has run
        peer.sendall(bytes(range(250)) * 80)   # 20,000 bytes, there before the next poll
        await asyncio.wait_for(protocol.got, 10)
        await asyncio.sleep(0.05)
        transport.close()
        peer.close()
        return bytes(protocol.data), protocol.iterations

    data, iterations = goloop.run(main())
    runs = [iterations.count(i) for i in sorted(set(iterations))]
    if pause_after is None:
        assert data == bytes(range(250)) * 80
        assert max(runs) == 8, runs                   # 8 reads in one iteration
    else:
        assert data == (bytes(range(250)) * 80)[:pause_after]
        assert len(iterations) == 3, iterations       # no read after the pause
