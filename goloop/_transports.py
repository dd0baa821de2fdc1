"""goloop's transports: asyncio's, with their hot paths in C.

SocketTransport is the running Python version's own
selector_events._SelectorSocketTransport with the native
SocketTransportCore (csrc/loop/stream.c) in front of it in the method
order; DatagramTransport is _SelectorDatagramTransport with
DatagramTransportCore (csrc/loop/datagram.c).  The cores take what runs
on every read and write, and for a socket transport what runs once per
connection — its construction, close() and connection_lost
(csrc/loop/stream_life.c) — and hand every other case to asyncio's
methods, which keep all the rest: connecting, flow control, the write
queue, write_eof, abort, sendfile, start_tls, the server's bookkeeping
(csrc/loop/transport.c has the design).  The loop's _make_*_transport
methods (below, methods of goloop.EventLoop) make these for every TCP,
Unix and UDP connection, TLS ones included (asyncio's SSL protocol runs
over a SocketTransport), and for the reading end of every pipe
(connect_read_pipe, subprocesses' stdout and stderr): ReadPipeTransport,
asyncio's _UnixReadPipeTransport with ReadPipeTransportCore (pipe.c).
A plain server's accept loop is native too (accept_connection below,
csrc/loop/accept.c).
"""
import socket
import sys
import weakref
from asyncio import constants, selector_events, sslproto, unix_events
from asyncio.log import logger

from . import _goloop

# 3.12+ refuse, when making a transport, a socket that another transport
# already uses; 3.15 gives transports a context (the **kwargs below).
_ENSURES_FD_NO_TRANSPORT = sys.version_info >= (3, 12)

# The attributes of asyncio's transports that the native halves read on
# every call (with BaseTransport's slot _extra).  SocketTransport adds the
# others its native construction and closing set (stream_life.c), those of
# the running version among them: 3.12+ bind _write_ready on each transport
# (3.11 has it as a method, which a slot would hide), 3.15 gives it a
# context and counts its buffer.
_SHARED_SLOTS = ("_sock", "_sock_fd", "_protocol", "_conn_lost", "_buffer", "_closing", "_paused")
_SOCKET_VERSION_SLOTS = ((("_write_ready",) if sys.version_info >= (3, 12) else ())
                         + (("_context", "_buffer_size") if sys.version_info >= (3, 15) else ()))


class SocketTransport(_goloop.SocketTransportCore, selector_events._SelectorSocketTransport):
    """asyncio's socket transport with its per-read and per-write work in C."""

    # What both halves read on every call: slots, which asyncio's code
    # reads and writes as attributes and the C half at fixed offsets.
    __slots__ = _SHARED_SLOTS + ("_eof", "_empty_waiter", "_read_ready_cb", "_protocol_connected",
                                 "_server") + _SOCKET_VERSION_SLOTS

    # __init__ is SocketTransportCore's: asyncio's, in C (stream_life.c).


class DatagramTransport(_goloop.DatagramTransportCore, selector_events._SelectorDatagramTransport):
    """asyncio's UDP transport with its per-datagram work in C."""

    __slots__ = _SHARED_SLOTS + ("_address",)

    def __init__(self, *args, **kwargs):
        self._sock = None           # as SocketTransport's
        super().__init__(*args, **kwargs)


class ReadPipeTransport(_goloop.ReadPipeTransportCore, unix_events._UnixReadPipeTransport):
    """asyncio's transport of a pipe's reading end, with its read path in C."""

    __slots__ = ("_fileno", "_protocol")

    def _read_eof(self):
        # The pipe's end: what asyncio's _read_ready does on reading b"".
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._closing = True
        self._loop._remove_reader(self._fileno)
        self._loop.call_soon(self._protocol.eof_received)
        self._loop.call_soon(self._call_connection_lost, None)


_goloop._setup_transports(selector_events._SelectorSocketTransport, SocketTransport,
                          selector_events._SelectorDatagramTransport, DatagramTransport,
                          unix_events._UnixReadPipeTransport, ReadPipeTransport)


_stock_ensure_fd_no_transport = selector_events.BaseSelectorEventLoop._ensure_fd_no_transport


def _ensure_fd_no_transport(loop, sock):
    """loop._ensure_fd_no_transport(sock): the socket's fd is free of
    transports (or of open ones) — asyncio's method, which asks
    loop._transports for the fd and catches the KeyError of a free one,
    costs a raised exception on every new connection; a free fd of a
    plain socket is seen here without one."""
    transports = loop._transports
    if (type(sock) is socket.socket and type(transports) is weakref.WeakValueDictionary
            and type(loop)._ensure_fd_no_transport is _stock_ensure_fd_no_transport):
        ref = transports.data.get(sock.fileno())
        if ref is None or ref() is None:
            return
    loop._ensure_fd_no_transport(sock)      # raises as asyncio's


def make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None, **kwargs):
    """EventLoop._make_socket_transport: asyncio's, with SocketTransport."""
    if _ENSURES_FD_NO_TRANSPORT:
        _ensure_fd_no_transport(self, sock)
    return SocketTransport(self, sock, protocol, waiter, extra, server, **kwargs)


def make_ssl_transport(self, rawsock, protocol, sslcontext, waiter=None, *,
                       server_side=False, server_hostname=None, extra=None, server=None,
                       ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT, **kwargs):
    """EventLoop._make_ssl_transport: asyncio's SSL protocol over a
    SocketTransport."""
    if _ENSURES_FD_NO_TRANSPORT:
        self._ensure_fd_no_transport(rawsock)
    ssl_protocol = sslproto.SSLProtocol(
        self, protocol, sslcontext, waiter, server_side, server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout, ssl_shutdown_timeout=ssl_shutdown_timeout)
    SocketTransport(self, rawsock, ssl_protocol, extra=extra, server=server, **kwargs)
    return ssl_protocol._app_transport


def make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None, **kwargs):
    """EventLoop._make_datagram_transport: asyncio's, with DatagramTransport."""
    if _ENSURES_FD_NO_TRANSPORT:
        self._ensure_fd_no_transport(sock)
    return DatagramTransport(self, sock, protocol, address, waiter, extra, **kwargs)


def make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
    """EventLoop._make_read_pipe_transport: asyncio's, with ReadPipeTransport."""
    return ReadPipeTransport(self, pipe, protocol, waiter, extra)


_stock_accept_connection = selector_events.BaseSelectorEventLoop._accept_connection


def accept_connection(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100,
                      ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                      ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT, context=None):
    """EventLoop._accept_connection: the listening socket is readable.

    asyncio accepts up to backlog connections and gives each to a task
    (_accept_connection2) that makes its protocol and transport one
    iteration later and then waits for a future the transport sets one
    more iteration on: per connection a task, two steps, a future and
    two loop iterations, only to report a failure to make the transport,
    which it reports only in debug mode.  goloop's accept loop
    (csrc/loop/accept.c) gives each accepted connection its protocol and
    transport at once, in a context of its own as the task's would be (a
    copy of the current one; on 3.15 of the server's context when it has
    one), and drops a failure to make them as asyncio drops it (the socket
    closed).  TLS connections (their handshake is what the task waits
    for) and debug mode (asyncio logs every connection and every failure)
    go through asyncio's own method, as does running out of file
    descriptors or memory in accept(): asyncio reports it and retries
    later, with these arguments (its accept() gets the same error again,
    or the next connection if the shortage has passed)."""
    args = (self, protocol_factory, sock, sslcontext, server, backlog,
            ssl_handshake_timeout, ssl_shutdown_timeout) + (() if context is None else (context,))
    if sslcontext is not None or self._debug:
        return _stock_accept_connection(*args)
    if _goloop._accept_connections(self, protocol_factory, sock, server, backlog, context):
        return _stock_accept_connection(*args)
