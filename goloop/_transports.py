"""goloop's socket transport: asyncio's, with its read and write paths in C.

SocketTransport is the running Python version's own
selector_events._SelectorSocketTransport with the native
SocketTransportCore (csrc/loop/stream.c) in front of it in the method
order.  The core takes what runs on every read and write (_read_ready and
its two read paths, write) and hands every other case to asyncio's methods,
which keep all the rest: connecting, closing, flow control, the write
queue, write_eof, sendfile, start_tls, the server's bookkeeping.
The loop's _make_socket_transport and _make_ssl_transport (below, methods
of goloop.EventLoop) make these for every TCP and Unix stream connection,
TLS ones included (asyncio's SSL protocol runs over them).
"""
import sys
from asyncio import constants, selector_events, sslproto

from . import _goloop

# 3.12+ refuse, when making a transport, a socket that another transport
# already uses; 3.15 gives transports a context (the **kwargs below).
_ENSURES_FD_NO_TRANSPORT = sys.version_info >= (3, 12)


class SocketTransport(_goloop.SocketTransportCore, selector_events._SelectorSocketTransport):
    """asyncio's socket transport with its per-read and per-write work in C."""

    # What both halves read on every call: slots, which asyncio's code
    # reads and writes as attributes and the C half at fixed offsets.
    __slots__ = ("_sock", "_sock_fd", "_protocol", "_conn_lost", "_buffer", "_eof",
                 "_empty_waiter", "_read_ready_cb")

    def __init__(self, *args, **kwargs):
        # asyncio's class attribute _sock = None, which the slot hides, is
        # what its __del__ reads of a transport whose __init__ failed early.
        self._sock = None
        super().__init__(*args, **kwargs)


_goloop._setup_transports(selector_events._SelectorSocketTransport, SocketTransport)


def make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None, **kwargs):
    """EventLoop._make_socket_transport: asyncio's, with SocketTransport."""
    if _ENSURES_FD_NO_TRANSPORT:
        self._ensure_fd_no_transport(sock)
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
