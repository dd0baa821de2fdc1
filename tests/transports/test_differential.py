"""Differential transport tests: goloop's socket transports behave exactly as
stock asyncio's.

Each case drives one scripted sequence of transport calls and peer
behaviours on a stock asyncio loop (the selector loop, as
asyncio.new_event_loop() makes it) and on a goloop loop, on the same
interpreter, and records what a program could observe: every protocol
callback (connection_made, data_received with its bytes, get_buffer's size
hint and buffer_updated's bytes, eof_received and what it returned,
pause_writing, resume_writing, connection_lost with its exception's type and
errno), the outcome (result, or exception type and message) of each transport
call, what the peer received, what reached the loop's exception handler and
what asyncio logged.  The two logs must be equal.

The peer is a second, non-blocking socket driven on the same loop with
loop.sock_*, so that both runs interleave deterministically.  Only what may
legitimately differ between two runs is normalised: chunk boundaries
(consecutive data_received / get_buffer+buffer_updated are merged and
compared as totals; the order of the other callbacks is kept), addresses and
ports (compared with the peer's own instead of printed), the Unix socket's
temporary path, object addresses, fds and line numbers in messages (as
loop_helpers.normalize does), and how many bytes the kernel took before a
transport started buffering (buffer sizes are recorded relative to the size
at that point).

Today goloop uses the standard library's transports over its own core and
poller, so every case must pass; the cases then guard the native transports
that replace them.
"""
import asyncio
import hashlib
import logging
import os
import random
import shutil
import socket
import struct
import sys
import tempfile

import pytest

# The differential helpers of the event-loop tests (tests/loop): pytest's
# prepend import mode puts only this directory on sys.path.
_LOOP_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "loop")
if _LOOP_TESTS not in sys.path:
    sys.path.append(_LOOP_TESTS)

from loop_helpers import KINDS, normalize, outcome, run_on  # noqa: E402

STEP_TIMEOUT = 5.0      # any single wait (a callback, the peer's I/O)
CASE_TIMEOUT = 10.0     # one scenario on one loop
BUFFERED_SIZE = 16 * 1024                      # the BufferedProtocol's buffer
FILL_CHUNK = 256 * 1024
FILL_LIMIT = 256                               # chunks: 64 MiB before giving up
PATTERN = random.Random(20240611).randbytes((1 << 20) + FILL_CHUNK)
BIG = PATTERN[: 1 << 20]                       # 1 MiB


def chunk(i, size=FILL_CHUNK):
    """Recognisable bytes for the i-th write of a kind (no two alike)."""
    start = (i * 7919) % FILL_CHUNK
    return PATTERN[start:start + size]


def digest(data):
    return (len(data), hashlib.sha256(data).hexdigest()[:16])


def exc_desc(exc):
    if exc is None:
        return None
    return (type(exc).__name__, getattr(exc, "errno", None))


# ---- recording protocols ---------------------------------------------------

class _Recording:
    """What both recording protocols share.  Hooks (keyword arguments) let a
    scenario act inside a callback: on_made(p), on_data(p, data), on_eof(p)
    (its result is what eof_received returns; default: eof_result),
    on_pause(p), on_resume(p)."""

    def __init__(self, env, name, *, eof_result=None, **hooks):
        self.env = env
        self.name = name
        self.eof_result = eof_result
        self.hooks = hooks
        self.transport = None
        self.received = bytearray()
        self.made = self.eof = self.lost = False

    def _event(self, *what):
        self.env.add(self.name, *what)

    def _hook(self, name, *args):
        hook = self.hooks.get(name)
        return hook(self, *args) if hook is not None else None

    def connection_made(self, transport):
        self.transport = transport
        self.made = True
        self._event("connection_made")
        self._hook("on_made")

    def _data(self, data):
        self._event("data", data)
        self.received += data
        self._hook("on_data", data)

    def eof_received(self):
        self._event("eof_received")
        self.eof = True
        result = self._hook("on_eof") if "on_eof" in self.hooks else self.eof_result
        self._event("eof_received returns", repr(result))
        transport = self.transport
        # What the returned value did, seen by the next callback.
        self.env.loop.call_soon(
            lambda: self._event("after eof_received", transport.is_closing(), transport.is_reading())
        )
        return result

    def pause_writing(self):
        self._event("pause_writing")
        self._hook("on_pause")

    def resume_writing(self):
        self._event("resume_writing")
        self._hook("on_resume")

    def connection_lost(self, exc):
        self._event("connection_lost", exc_desc(exc))
        self.lost = True


class Rec(_Recording, asyncio.Protocol):
    def data_received(self, data):
        self._data(bytes(data))


class BufRec(_Recording, asyncio.BufferedProtocol):
    """get_buffer(hint) -> on_get_buffer(p, hint) if given, else a buffer of
    its own."""

    def __init__(self, env, name, **kw):
        super().__init__(env, name, **kw)
        self.buffer = bytearray(BUFFERED_SIZE)

    def get_buffer(self, sizehint):
        self._event("get_buffer", sizehint)
        if "on_get_buffer" in self.hooks:
            return self.hooks["on_get_buffer"](self, sizehint)
        return self.buffer

    def buffer_updated(self, nbytes):
        self._data(bytes(self.buffer[:nbytes]))


# ---- the merged log --------------------------------------------------------

def merge(entries):
    """The log as compared: each run of consecutive data entries of one
    protocol (data_received, or get_buffer + buffer_updated) becomes one
    ("data", length, digest, size hints seen); the rest is kept in order."""
    out = []
    run = None
    for e in entries:
        if len(e) >= 2 and e[1] in ("data", "get_buffer"):
            if run is None or run[0] != e[0]:
                run = [e[0], bytearray(), set()]
                out.append(run)
            if e[1] == "data":
                run[1] += e[2]
            else:
                run[2].add(e[2])
            continue
        run = None
        out.append(e)
    return [
        (e[0], "data", *digest(bytes(e[1])), tuple(sorted(e[2]))) if isinstance(e, list) else e
        for e in out
    ]


def violations(entries):
    """Per protocol: connection_made at most once and first, connection_lost
    at most once and last."""
    bad = []
    seen = {}
    for e in entries:
        name, what = e[0], e[1]
        if name in ("call", "note", "peer", "handler", "log"):
            continue
        state = seen.setdefault(name, {"events": 0, "lost": False})
        if state["lost"]:
            bad.append(("after connection_lost", e))
        if what == "connection_made" and state["events"]:
            bad.append(("connection_made not first", e))
        if what == "connection_lost":
            state["lost"] = True
        state["events"] += 1
    return bad


class _LogCapture(logging.Handler):
    def __init__(self, env):
        super().__init__(logging.WARNING)
        self.env = env

    def emit(self, record):
        self.env.add("log", record.levelname, self.env.clean(record.getMessage()))


# ---- one run of one scenario -------------------------------------------------

class Env:
    """One scenario's run on one loop: the log, the connections it opened,
    and the helpers the scenarios are written with."""

    def __init__(self, family, side, pkind, tmpdir):
        self.family, self.side, self.pkind = family, side, pkind
        self.path = os.path.join(tmpdir, "s") if family == "unix" else None
        self.log = []
        self.sent = bytearray()       # what transports were given through write_data
        self.loop = None
        self._changed = None
        self._listener = self._server = self._addr = None
        self._pending = []            # protocols for the server's factory
        self._transports, self._sockets = [], []

    # -- the log --
    def add(self, *entry):
        self.log.append(entry)
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    def note(self, *what):
        self.add("note", *what)

    def clean(self, text):
        text = normalize(text)
        return text.replace(self.path, "<path>") if self.path else text

    def call(self, label, fn, *args, show=None, **kwargs):
        """Call fn, log its outcome under label, return its result (None if
        it raised)."""
        kind, value = outcome(fn, *args, **kwargs)
        if kind == "ok":
            self.add("call", label, "ok", show(value) if show else value)
            return value
        self.add("call", label, kind.__name__, self.clean(value))
        return None

    def proto(self, name, kind=None, **kw):
        kind = kind or self.pkind
        return (BufRec if kind == "buffered" else Rec)(self, name, **kw)

    # -- waiting --
    async def wait(self, aw, what):
        try:
            return await asyncio.wait_for(aw, STEP_TIMEOUT)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; log: {merge(self.log)[-10:]}") from None

    async def until(self, pred, what):
        async def poll():
            while not pred():
                self._changed = self.loop.create_future()
                await self._changed
        try:
            await self.wait(poll(), what)
        finally:
            self._changed = None

    async def settle(self):
        """Let the loop poll a few times (for what must not happen)."""
        for _ in range(3):
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        for _ in range(3):
            await asyncio.sleep(0)

    # -- connections --
    def new_peer_socket(self):
        fam = socket.AF_INET if self.family == "tcp" else socket.AF_UNIX
        sock = socket.socket(fam, socket.SOCK_STREAM)
        sock.setblocking(False)
        self._sockets.append(sock)
        return sock

    async def open(self, protocol, peer_sock=None):
        """A connection whose transport (client or server side, per the case)
        talks to `protocol`; (transport, protocol, Peer)."""
        loop = self.loop
        if self.side == "client":
            if self._listener is None:
                self._listener = self.new_peer_socket()
                self._listener.bind(("127.0.0.1", 0) if self.family == "tcp" else self.path)
                self._listener.listen(8)
            if self.family == "tcp":
                host, port = self._listener.getsockname()
                made = loop.create_connection(lambda: protocol, host, port)
            else:
                made = loop.create_unix_connection(lambda: protocol, self.path)
            transport, _ = await self.wait(made, "create_connection")
            self._transports.append(transport)
            sock, _ = await self.wait(loop.sock_accept(self._listener), "sock_accept")
            sock.setblocking(False)
            self._sockets.append(sock)
        else:
            if self._server is None:
                factory = lambda: self._pending.pop(0)  # noqa: E731
                if self.family == "tcp":
                    made = loop.create_server(factory, "127.0.0.1", 0)
                else:
                    made = loop.create_unix_server(factory, self.path)
                self._server = await self.wait(made, "create_server")
                self._addr = self._server.sockets[0].getsockname()
            self._pending.append(protocol)
            sock = peer_sock or self.new_peer_socket()
            await self.wait(loop.sock_connect(sock, self._addr), "sock_connect")
            await self.until(lambda: protocol.made, "connection_made")
            transport = protocol.transport
            self._transports.append(transport)
        return transport, protocol, Peer(self, sock)

    def write_data(self, transport, data):
        """transport.write(data), remembered in self.sent (not logged)."""
        transport.write(data)
        self.sent += data

    def fill(self, transport):
        """Write until the kernel pushes back and the transport buffers (the
        write limits are first raised so that this does not pause the
        protocol); the buffered size then, which varies from run to run."""
        self.call("set_write_buffer_limits(high=1<<40)", transport.set_write_buffer_limits, high=1 << 40)
        for i in range(FILL_LIMIT):
            self.write_data(transport, chunk(i))
            if transport.get_write_buffer_size():
                return transport.get_write_buffer_size()
        raise AssertionError("the kernel never pushed back")

    def describe_extra(self, key, value, peer):
        if key == "socket":
            if value is None:
                return None
            return (type(value).__name__, socket.AddressFamily(value.family).name,
                    socket.SocketKind(value.type).name)
        if key in ("peername", "sockname"):
            expected = peer.sockname if key == "peername" else peer.peername
            if isinstance(value, tuple):
                return ("tuple", len(value), value[0], value == expected)
            return (type(value).__name__, self.clean(str(value)), value == expected)
        return value

    def extra(self, transport, peer, key, *default):
        self.call(f"get_extra_info({key!r}{', ' + repr(default[0]) if default else ''})",
                  transport.get_extra_info, key, *default,
                  show=lambda v: self.describe_extra(key, v, peer))

    async def main(self, scenario):
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(
            lambda loop, ctx: self.add(
                "handler", self.clean(ctx.get("message", "")), type(ctx.get("exception")).__name__
            )
        )
        capture = _LogCapture(self)
        logging.getLogger("asyncio").addHandler(capture)
        try:
            await asyncio.wait_for(scenario(self), CASE_TIMEOUT)
        except BaseException:
            await self._cleanup(failed=True)    # without hiding the failure
            raise
        else:
            await self._cleanup(failed=False)
        finally:
            logging.getLogger("asyncio").removeHandler(capture)

    async def _cleanup(self, failed):
        """Close what the scenario left open (nothing, when it passes)."""
        for t in self._transports:
            if not t.is_closing():
                t.abort()
        for s in self._sockets:
            s.close()
        if self._server is not None:
            self._server.close()
            try:
                await asyncio.wait_for(self._server.wait_closed(), STEP_TIMEOUT)
            except asyncio.TimeoutError:
                if not failed:
                    raise AssertionError("server.wait_closed() did not return") from None
        await asyncio.sleep(0)      # _call_connection_lost closes the sockets
        await asyncio.sleep(0)


class Peer:
    """The other end of a connection: a non-blocking socket driven with
    loop.sock_* on the loop under test."""

    def __init__(self, env, sock):
        self.env, self.sock = env, sock
        self.sockname = sock.getsockname()
        self.peername = sock.getpeername()

    def send_now(self, data):
        n = self.sock.send(data)
        assert n == len(data), "a small send did not fit in the socket buffer"

    async def sendall(self, data):
        await self.env.wait(self.env.loop.sock_sendall(self.sock, data), "the peer's sock_sendall")

    async def recv_exactly(self, n):
        buf = bytearray()
        while len(buf) < n:
            data = await self.env.wait(self.env.loop.sock_recv(self.sock, min(n - len(buf), FILL_CHUNK)),
                                       f"the peer to receive {n} bytes (has {len(buf)})")
            if not data:
                break
            buf += data
        return bytes(buf)

    async def read_to_eof(self):
        """(all bytes until EOF, "eof" or the error's (type, errno))."""
        buf = bytearray()
        try:
            while True:
                data = await self.env.wait(self.env.loop.sock_recv(self.sock, FILL_CHUNK),
                                           f"EOF at the peer (has {len(buf)} bytes)")
                if not data:
                    return bytes(buf), "eof"
                buf += data
        except OSError as e:
            return bytes(buf), exc_desc(e)

    async def log_read_to_eof(self):
        data, end = await self.read_to_eof()
        self.env.add("peer", "read to EOF", *digest(data), end)
        return data

    def shutdown_wr(self):
        self.sock.shutdown(socket.SHUT_WR)

    def reset(self):
        """Abort the connection: over TCP a RST (SO_LINGER 0); a Unix socket
        gives its peer ECONNRESET when closed with unread data, which every
        reset scenario leaves in it."""
        if self.env.family == "tcp":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        self.sock.close()


async def _shutdown_and_lose(env, peer, p):
    """The common ending: the peer half-closes, the protocol's eof_received
    returns None so the transport closes, the peer reads to EOF."""
    peer.shutdown_wr()
    await env.until(lambda: p.lost, "connection_lost after the peer's EOF")
    await peer.log_read_to_eof()
    peer.close()


# ---- scenarios ----------------------------------------------------------------
# Each is `async def s(env)`; SCENARIOS says which protocol kinds it runs with.

async def s_extra_info(env):
    tr, p, peer = await env.open(env.proto("p"))
    for key in ("peername", "sockname", "socket", "nonexistent", "peercert", "sslcontext"):
        env.extra(tr, peer, key)
    env.extra(tr, peer, "nonexistent", "the default")
    env.extra(tr, peer, "peername", "the default")
    for name in ("can_write_eof", "is_closing", "is_reading", "get_write_buffer_size",
                 "get_write_buffer_limits"):
        env.call(name, getattr(tr, name))
    env.call("get_protocol() is p", lambda: tr.get_protocol() is p)
    env.call("write(str)", tr.write, "text")
    env.call("write(None)", tr.write, None)
    env.call("write(int)", tr.write, 7)
    env.call("write(b'')", tr.write, b"")
    env.call("write(bytes)", tr.write, b"<bytes>")
    env.call("write(bytearray)", tr.write, bytearray(b"<bytearray>"))
    env.call("write(memoryview)", tr.write, memoryview(b"<memoryview>"))
    env.call("writelines(list)", tr.writelines, [b"<l1>", bytearray(b"<l2>"), memoryview(b"<l3>")])
    env.call("writelines(tuple)", tr.writelines, (b"<t1>", b"<t2>"))
    env.call("writelines(iterator)", tr.writelines, iter([b"<i1>", b"", b"<i2>"]))
    env.call("writelines([])", tr.writelines, [])
    expected = b"<bytes><bytearray><memoryview><l1><l2><l3><t1><t2><i1><i2>"
    env.add("peer", "received", await peer.recv_exactly(len(expected)))
    env.call("get_write_buffer_size", tr.get_write_buffer_size)
    # Last, as what a failed writelines leaves queued varies between
    # versions (3.15 keeps the items before the bad one, with no writer to
    # send them).
    env.call("writelines([str])", tr.writelines, ["text"])
    env.call("get_write_buffer_size", tr.get_write_buffer_size)
    env.call("writelines(bytes)", tr.writelines, b"abc")
    env.call("get_write_buffer_size", tr.get_write_buffer_size)
    env.call("writelines([bytes, str])", tr.writelines, [b"<ok>", "text"])
    env.call("get_write_buffer_size", tr.get_write_buffer_size)
    env.call("write_eof", tr.write_eof)
    await env.settle()
    env.call("abort", tr.abort)
    await env.until(lambda: p.lost, "connection_lost")
    data, end = await peer.read_to_eof()
    env.add("peer", "read to EOF", data, end)
    peer.close()


async def s_receive_small(env):
    tr, p, peer = await env.open(env.proto("p"))
    sizes = [1 + (i * 37) % 211 for i in range(300)]
    total, pos = 0, 0
    for i, size in enumerate(sizes):
        peer.send_now(PATTERN[pos:pos + size])
        pos += size
        total += size
        if i % 3 == 0:
            await asyncio.sleep(0)
    await env.until(lambda: len(p.received) >= total, "all the small pieces")
    env.note("received what was sent", bytes(p.received) == PATTERN[:total])
    await _shutdown_and_lose(env, peer, p)


async def s_receive_big(env):
    tr, p, peer = await env.open(env.proto("p"))
    await peer.sendall(BIG)
    await env.until(lambda: len(p.received) >= len(BIG), "1 MiB")
    env.note("received what was sent", bytes(p.received) == BIG)
    # Whether 1 MiB passes the default high-water mark depends on how much
    # the kernel takes at once: no flow control here (see flow_control).
    env.call("set_write_buffer_limits(high=1<<40)", tr.set_write_buffer_limits, high=1 << 40)
    env.write_data(tr, BIG[::-1])
    data = await peer.recv_exactly(len(BIG))
    env.add("peer", "received", data == BIG[::-1])
    await _shutdown_and_lose(env, peer, p)


def _eof_scenario(result):
    async def s(env):
        kw = {"eof_result": result}
        if result == "raise":
            def on_eof(p):
                raise LookupError("eof_received failed on purpose")
            kw = {"on_eof": on_eof}
        tr, p, peer = await env.open(env.proto("p", **kw))
        peer.send_now(b"before the EOF")
        peer.shutdown_wr()
        await env.until(lambda: p.eof, "eof_received")
        if result is True:
            await env.settle()
            env.call("is_closing", tr.is_closing)
            env.call("is_reading", tr.is_reading)
            env.call("resume_reading", tr.resume_reading)
            env.call("write", tr.write, b"written after eof_received")
            env.add("peer", "received", await peer.recv_exactly(26))
            env.call("close", tr.close)
        await env.until(lambda: p.lost, "connection_lost")
        env.call("is_closing", tr.is_closing)
        await peer.log_read_to_eof()
        peer.close()
    return s


async def _reset(env, buffered):
    tr, p, peer = await env.open(env.proto("p"))
    env.write_data(tr, b"left unread by the peer")
    peer.send_now(b"hello")
    await env.until(lambda: len(p.received) >= 5, "hello")
    if buffered:
        base = env.fill(tr)
        env.write_data(tr, BIG)
        env.call("buffered (relative)", lambda: tr.get_write_buffer_size() - base)
    peer.reset()
    await env.until(lambda: p.lost, "connection_lost after the reset")
    env.call("is_closing", tr.is_closing)
    env.call("get_write_buffer_size", tr.get_write_buffer_size)
    for i in range(6):      # asyncio warns from the fifth write on a lost connection
        env.call(f"write #{i} after the reset", tr.write, b"x")
    env.call("close", tr.close)


async def s_reset_reading(env):
    await _reset(env, buffered=False)


async def s_reset_writing(env):
    await _reset(env, buffered=True)


async def s_pause_reading(env):
    tr, p, peer = await env.open(env.proto("p"))
    env.call("is_reading", tr.is_reading)
    env.call("pause_reading", tr.pause_reading)
    env.call("is_reading", tr.is_reading)
    env.call("pause_reading again", tr.pause_reading)
    env.call("is_reading", tr.is_reading)
    peer.send_now(b"sent while paused")
    await env.settle()
    env.note("received while paused", len(p.received))
    env.call("resume_reading", tr.resume_reading)
    env.call("is_reading", tr.is_reading)
    env.call("resume_reading again", tr.resume_reading)
    await env.until(lambda: len(p.received) >= 17, "the data sent while paused")
    # Paused from inside data_received.
    p.hooks["on_data"] = lambda p, data: env.call("pause_reading in data_received", p.transport.pause_reading)
    peer.send_now(b"pause here")
    await env.until(lambda: len(p.received) >= 27, "pause here")
    del p.hooks["on_data"]
    peer.send_now(b"after the pause")
    await env.settle()
    env.note("received while paused", len(p.received))
    env.call("is_reading", tr.is_reading)
    env.call("resume_reading", tr.resume_reading)
    await env.until(lambda: len(p.received) >= 42, "the data sent while paused")
    # A half-close seen only on resume.
    env.call("pause_reading", tr.pause_reading)
    peer.shutdown_wr()
    await env.settle()
    env.note("eof while paused", p.eof)
    env.call("resume_reading", tr.resume_reading)
    await env.until(lambda: p.lost, "connection_lost")
    env.call("is_reading after close", tr.is_reading)
    env.call("pause_reading after close", tr.pause_reading)
    env.call("resume_reading after close", tr.resume_reading)
    env.call("is_reading after close", tr.is_reading)
    await peer.log_read_to_eof()
    peer.close()


async def s_flow_control(env):
    limits = {}

    def at_resume(p):
        # How far below low the buffer is by then depends on how much the
        # kernel took at once; only the bound is the transport's.
        env.note("at resume_writing: size <= low", p.transport.get_write_buffer_size() <= limits["low"])

    tr, p, peer = await env.open(env.proto("p", on_resume=at_resume))
    env.call("get_write_buffer_limits (defaults)", tr.get_write_buffer_limits)
    env.call("set_write_buffer_limits(high=100)", tr.set_write_buffer_limits, high=100)
    env.call("get_write_buffer_limits", tr.get_write_buffer_limits)
    env.call("set_write_buffer_limits(low=10)", tr.set_write_buffer_limits, low=10)
    env.call("get_write_buffer_limits", tr.get_write_buffer_limits)
    env.call("set_write_buffer_limits(high=50, low=50)", tr.set_write_buffer_limits, high=50, low=50)
    env.call("get_write_buffer_limits", tr.get_write_buffer_limits)
    for kw in ({"high": 1, "low": 2}, {"high": -1}, {"low": -1}, {"high": -1, "low": -1}, {"high": 0, "low": 1}):
        env.call(f"set_write_buffer_limits(**{kw})", tr.set_write_buffer_limits, **kw)
        env.call("get_write_buffer_limits", tr.get_write_buffer_limits)
    env.call("set_write_buffer_limits(high=0)", tr.set_write_buffer_limits, high=0)
    env.call("get_write_buffer_limits", tr.get_write_buffer_limits)
    env.call("write(small) with high=0", env.write_data, tr, b"small")   # sent at once: no pause
    env.call("get_write_buffer_size", tr.get_write_buffer_size)

    # Round 1: past high by writing.
    base = env.fill(tr)

    def rel():
        return tr.get_write_buffer_size() - base

    limits.update(low=base + 16384, high=base + 65536)
    env.call("set_write_buffer_limits(high=base+64K, low=base+16K)",
             tr.set_write_buffer_limits, high=limits["high"], low=limits["low"])
    env.call("get_write_buffer_limits (relative)",
             lambda: tuple(v - base for v in tr.get_write_buffer_limits()))
    env.call("size", rel)
    for n, size in enumerate((32768, 32768, 1, 100)):
        env.call(f"write({size})", env.write_data, tr, chunk(1000 + n, size))
        env.call("size", rel)
    # (No writelines here: from 3.12 on it tries a send at once even with
    # data queued, and how much the kernel has taken meanwhile varies.)
    env.call("set_write_buffer_limits while paused", tr.set_write_buffer_limits, high=base, low=base)
    limits.update(low=base, high=base)
    data = await peer.recv_exactly(len(env.sent))
    env.add("peer", "received all", data == env.sent)
    await env.until(lambda: tr.get_write_buffer_size() == 0, "the buffer to drain")
    env.call("get_write_buffer_size", tr.get_write_buffer_size)

    # Round 2: past high by lowering it.
    env.sent.clear()
    base = env.fill(tr)
    env.call("set_write_buffer_limits(high=0)", tr.set_write_buffer_limits, high=0)
    limits.update(low=0, high=0)
    env.call("get_write_buffer_limits", tr.get_write_buffer_limits)
    env.call("write(1)", env.write_data, tr, b"!")
    env.call("size", rel)
    data = await peer.recv_exactly(len(env.sent))
    env.add("peer", "received all", data == env.sent)
    await env.until(lambda: tr.get_write_buffer_size() == 0, "the buffer to drain")
    await _shutdown_and_lose(env, peer, p)


async def s_write_eof(env):
    tr, p, peer = await env.open(env.proto("p"))
    env.call("can_write_eof", tr.can_write_eof)
    env.call("write", tr.write, b"before write_eof")
    env.call("write_eof", tr.write_eof)
    env.call("write_eof again", tr.write_eof)
    env.call("is_closing", tr.is_closing)
    env.call("is_reading", tr.is_reading)
    env.call("can_write_eof", tr.can_write_eof)
    env.call("write after write_eof", tr.write, b"after")
    env.call("write(b'') after write_eof", tr.write, b"")
    env.call("write(str) after write_eof", tr.write, "after")
    env.call("writelines after write_eof", tr.writelines, [b"after"])
    env.call("get_write_buffer_size", tr.get_write_buffer_size)
    data, end = await peer.read_to_eof()
    env.add("peer", "read to EOF", data, end)
    peer.send_now(b"the peer still writes")
    await env.until(lambda: len(p.received) >= 21, "the peer's data after write_eof")
    await _shutdown_and_lose(env, peer, p)
    env.call("write_eof after connection_lost", tr.write_eof)


async def s_write_eof_queued(env):
    tr, p, peer = await env.open(env.proto("p"))
    base = env.fill(tr)
    env.write_data(tr, BIG)
    env.call("size (relative)", lambda: tr.get_write_buffer_size() - base)
    # Not logged: how much of it goes out at once varies (3.12+ sends).
    lines = [chunk(2000, 10), b"", chunk(2001, 20)]
    tr.writelines(lines)
    env.sent += b"".join(lines)
    env.call("write_eof with data queued", tr.write_eof)
    env.call("write after write_eof", tr.write, b"after")
    env.call("is_closing", tr.is_closing)
    data, end = await peer.read_to_eof()
    env.add("peer", "read to EOF", data == env.sent, end)
    env.call("get_write_buffer_size", tr.get_write_buffer_size)
    peer.send_now(b"the peer still writes")
    await env.until(lambda: len(p.received) >= 21, "the peer's data after write_eof")
    await _shutdown_and_lose(env, peer, p)


async def s_close_queued(env):
    tr, p, peer = await env.open(env.proto("p"))
    base = env.fill(tr)
    # 1 MiB more queued: far more than the kernel takes meanwhile, so that
    # writelines' send (3.14+) cannot drain the buffer.
    env.write_data(tr, BIG)
    env.call("close with data queued", tr.close)
    env.call("is_closing", tr.is_closing)
    env.call("is_reading", tr.is_reading)
    env.call("close again", tr.close)
    env.call("write after close", tr.write, b"<after close>")
    env.call("size (relative)", lambda: tr.get_write_buffer_size() - base)
    env.call("writelines after close", tr.writelines, [b"<lines after close>"])
    env.call("write_eof after close", tr.write_eof)
    await env.settle()
    env.note("connection_lost before the buffer drained", p.lost)
    data, end = await peer.read_to_eof()
    env.add("peer", "read to EOF", len(data) - len(env.sent), data[:len(env.sent)] == env.sent,
            data[len(env.sent):], end)
    await env.until(lambda: p.lost, "connection_lost")
    env.call("get_write_buffer_size", tr.get_write_buffer_size)
    peer.close()


async def s_abort_queued(env):
    tr, p, peer = await env.open(env.proto("p"))
    env.fill(tr)
    env.call("abort with data queued", tr.abort)
    env.call("is_closing", tr.is_closing)
    env.call("get_write_buffer_size", tr.get_write_buffer_size)
    env.call("abort again", tr.abort)
    env.call("close after abort", tr.close)
    env.call("write after abort", tr.write, b"x")
    env.note("connection_lost at once (inside abort)", p.lost)
    await env.until(lambda: p.lost, "connection_lost")
    data, end = await peer.read_to_eof()
    env.add("peer", "read to EOF", len(data) < len(env.sent), data == env.sent[:len(data)], end)
    peer.close()


async def s_close_in_made(env):
    def on_made(p):
        env.call("close in connection_made", p.transport.close)
        env.call("is_closing", p.transport.is_closing)
        env.call("close again", p.transport.close)

    tr, p, peer = await env.open(env.proto("p", on_made=on_made))
    env.call("is_closing", tr.is_closing)
    env.call("is_reading", tr.is_reading)
    env.call("write after close", tr.write, b"x")
    await env.until(lambda: p.lost, "connection_lost")
    await peer.log_read_to_eof()
    peer.close()


async def s_close_in_data(env):
    def on_data(p, data):
        env.call("close in data_received", p.transport.close)
        env.call("is_closing", p.transport.is_closing)
        env.call("write in data_received after close", p.transport.write, b"x")

    tr, p, peer = await env.open(env.proto("p", on_data=on_data))
    peer.send_now(b"first")
    await env.until(lambda: p.lost, "connection_lost")
    await peer.log_read_to_eof()
    peer.close()


async def s_close_twice(env):
    tr, p, peer = await env.open(env.proto("p"))
    env.call("close", tr.close)
    env.call("close again", tr.close)
    env.call("is_closing", tr.is_closing)
    env.note("connection_lost at once (inside close)", p.lost)
    await env.until(lambda: p.lost, "connection_lost")
    await env.settle()
    env.call("close after connection_lost", tr.close)
    env.call("abort after connection_lost", tr.abort)
    env.call("is_closing", tr.is_closing)
    env.call("is_reading", tr.is_reading)
    env.call("get_write_buffer_size", tr.get_write_buffer_size)
    env.call("get_protocol", lambda: {None: None, id(p): "p"}.get(id(tr.get_protocol()), "other"))
    env.extra(tr, peer, "peername")
    env.extra(tr, peer, "socket")
    env.call("socket fileno", lambda: tr.get_extra_info("socket").fileno())
    await peer.log_read_to_eof()
    peer.close()


async def s_set_protocol(env):
    first = env.pkind
    other = "protocol" if first == "buffered" else "buffered"
    a = env.proto("a")
    b = env.proto("b", kind=other)
    c = env.proto("c", kind=first)
    tr, a, peer = await env.open(a)
    names = {id(a): "a", id(b): "b", id(c): "c"}
    current = lambda: names.get(id(tr.get_protocol()), "other")  # noqa: E731
    peer.send_now(b"one")
    await env.until(lambda: a.received == b"one", "one")
    env.call("set_protocol(b)", tr.set_protocol, b)
    env.call("get_protocol", current)
    peer.send_now(b"two")
    await env.until(lambda: b.received == b"two", "two")
    env.call("set_protocol(c)", tr.set_protocol, c)
    env.call("get_protocol", current)
    peer.send_now(b"three")
    await env.until(lambda: c.received == b"three", "three")

    # Switched inside a callback, the next data goes to the new protocol.
    def switch(p, data):
        env.call("set_protocol(a) in a data callback", p.transport.set_protocol, a)

    c.transport = tr
    c.hooks["on_data"] = switch
    peer.send_now(b"four")
    await env.until(lambda: tr.get_protocol() is a, "the switch")
    peer.send_now(b"five")
    await env.until(lambda: a.received == b"onefive", "five")
    env.call("get_protocol", current)
    await _shutdown_and_lose(env, peer, a)


async def s_fd_reuse(env):
    tr1, p1, peer1 = await env.open(env.proto("one"))
    fd1 = tr1.get_extra_info("socket").fileno()
    peer2_sock = env.new_peer_socket() if env.side == "server" else None
    peer1.send_now(b"for one")
    await env.until(lambda: p1.received == b"for one", "one's data")
    peer1.send_now(b"unread by one")        # pending on the old fd when it closes
    env.call("abort one", tr1.abort)
    await env.until(lambda: p1.lost, "one's connection_lost")
    tr2, p2, peer2 = await env.open(env.proto("two"), peer_sock=peer2_sock)
    fd2 = tr2.get_extra_info("socket").fileno()
    env.note("fd reused", fd2 == fd1)
    env.call("one is_closing", tr1.is_closing)
    env.call("two is_closing", tr2.is_closing)
    data, end = await peer1.read_to_eof()
    env.add("peer", "one read to EOF", data, end)
    peer1.close()
    peer2.send_now(b"for two")
    await env.until(lambda: p2.received == b"for two", "two's data")
    env.write_data(tr2, b"from two")
    env.add("peer", "two received", await peer2.recv_exactly(8))
    await env.settle()
    await _shutdown_and_lose(env, peer2, p2)


def _get_buffer_fails(how):
    async def s(env):
        def on_get_buffer(p, hint):
            if how == "empty":
                return bytearray()
            raise ValueError("get_buffer failed on purpose")

        tr, p, peer = await env.open(env.proto("p", on_get_buffer=on_get_buffer))
        peer.send_now(b"x")
        await env.until(lambda: p.lost, "connection_lost")
        env.call("is_closing", tr.is_closing)
        await peer.log_read_to_eof()
        peer.close()
    return s


async def s_callback_raises(env):
    def on_data(p, data):
        transport = p.transport
        env.loop.call_soon(lambda: env.note("after the raise: is_closing", transport.is_closing()))
        raise ZeroDivisionError("data callback failed on purpose")

    tr, p, peer = await env.open(env.proto("p", on_data=on_data))
    peer.send_now(b"boom")
    await env.until(lambda: p.lost, "connection_lost")
    env.call("is_closing", tr.is_closing)
    env.call("write after the failure", tr.write, b"x")
    await peer.log_read_to_eof()
    peer.close()


BOTH = ("protocol", "buffered")
PROTOCOL = ("protocol",)
SCENARIOS = {
    "extra_info": (s_extra_info, PROTOCOL),
    "receive_small": (s_receive_small, BOTH),
    "receive_big": (s_receive_big, BOTH),
    "eof_none": (_eof_scenario(None), BOTH),
    "eof_false": (_eof_scenario(False), BOTH),
    "eof_true": (_eof_scenario(True), BOTH),
    "eof_raises": (_eof_scenario("raise"), BOTH),
    "reset_reading": (s_reset_reading, BOTH),
    "reset_writing": (s_reset_writing, PROTOCOL),
    "pause_reading": (s_pause_reading, BOTH),
    "flow_control": (s_flow_control, PROTOCOL),
    "write_eof": (s_write_eof, PROTOCOL),
    "write_eof_queued": (s_write_eof_queued, PROTOCOL),
    "close_queued": (s_close_queued, PROTOCOL),
    "abort_queued": (s_abort_queued, PROTOCOL),
    "close_in_made": (s_close_in_made, PROTOCOL),
    "close_in_data": (s_close_in_data, BOTH),
    "close_twice": (s_close_twice, PROTOCOL),
    "set_protocol": (s_set_protocol, BOTH),
    "fd_reuse": (s_fd_reuse, BOTH),
    "get_buffer_empty": (_get_buffer_fails("empty"), ("buffered",)),
    "get_buffer_raises": (_get_buffer_fails("raise"), ("buffered",)),
    "callback_raises": (s_callback_raises, BOTH),
}

# Cases where today's goloop differs from stock asyncio:
# {(scenario, family, side, pkind): reason}.
KNOWN_DIFFERENCES = {}


def _cases():
    for name, (_, pkinds) in SCENARIOS.items():
        for family in ("tcp", "unix"):
            for side in ("client", "server"):
                for pkind in pkinds:
                    key = (name, family, side, pkind)
                    marks = []
                    if key in KNOWN_DIFFERENCES:
                        marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_DIFFERENCES[key]))
                    yield pytest.param(*key, marks=marks, id="-".join(key))


def run_case(kind, name, family, side, pkind):
    """The merged log and the invariant violations of one scenario run on
    a new loop of `kind`."""
    tmpdir = tempfile.mkdtemp(prefix="gltr")
    try:
        env = Env(family, side, pkind, tmpdir)
        run_on(kind, lambda: env.main(SCENARIOS[name][0]))
        return merge(env.log), violations(env.log)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _open_fds():
    # No gc.collect(): every socket must be closed explicitly, not freed.
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("name, family, side, pkind", list(_cases()))
def test_transport_matches_stock(name, family, side, pkind):
    before = _open_fds()
    runs = {kind: run_case(kind, name, family, side, pkind) for kind in KINDS}
    for kind, (_, bad) in runs.items():
        assert not bad, f"{kind} broke a protocol invariant: {bad}"
    stock, ours = runs["asyncio"][0], runs["goloop"][0]
    assert ours == stock
    leaked = _open_fds() - before
    assert not leaked, f"fds left open: {sorted(leaked)}"
