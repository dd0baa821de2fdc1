"""Load generator for the network and HTTP benchmarks: blocking request/reply.

uvloop's echo methodology: the server under test runs in a process of its
own, the clients in others, with plain blocking sockets (TCP_NODELAY) on
loopback.  Each connection sends one message and waits for the whole reply
before it sends the next, so a connection has exactly one request in flight
and the server's speed, not a pipeline, sets the rate.  A message is a pair
(request bytes, reply size): an echo sends SIZE bytes and expects them back;
HTTP sends a keep-alive GET and expects the HTTP server's fixed response.
With tls, every connection speaks TLS (the ssl module's blocking SSLSocket,
which releases the GIL in OpenSSL's calls like a plain socket does): the
handshake is part of connecting, so a measured window holds only requests.
The client does not verify the server's certificate (a throwaway
self-signed one; verifying would cost only at the handshake anyway).

With reconnect, a connection is not one socket but a series of short-lived
ones: every request connects (TCP_NODELAY as connect() sets it, the TLS
handshake too with tls), sends, reads the whole reply and closes with a
plain close(), so what is measured is the server accepting, serving and
tearing down connections.  The client closes first, so the TIME_WAIT
sockets (60 s on Linux) pile up on the client side, one per request.  What
they hold is a 4-tuple, not a port: connect() shares an ephemeral port
between destinations, and every run has a server (a port) of its own, so the
bound is per run: the ephemeral range (ip_local_port_range, 32768-60999 by
default: 28,232 ports) within 60 s, so at a warm-up plus window of 1.25 s
some 22k connections/s, about twice the fastest measured here (~12k/s on 2
cores; 8 runs in a row left 62k TIME_WAIT sockets and no failure).  Beyond
it connect() fails (EADDRNOTAVAIL) and the run with it, unless tcp_tw_reuse
(2 by default: on loopback) recycles those older than 1 s.  A longer window
or a faster machine must keep under that bound.

client() is the body of one client process, forked by
benchmarks.workloads.network (a fork costs a millisecond where a fresh
interpreter costs tens, ten times per run).  It drives its connections on
threads (one each) and talks to its parent over a multiprocessing pipe, so
that all clients measure the same window:
  1. connect every connection (with reconnect: none yet), send "ready";
  2. receive (T0, T1), time.monotonic() values (system-wide on Linux): run
     requests from then on, counting those started in [T0, T1) (what runs
     before T0 is warm-up), stop at T1;
  3. send the count.
Bounded: every socket operation times out after TIMEOUT seconds, the run ends
at T1, and a parent silent for TIMEOUT seconds at step 2 ends the client.
"""
import functools
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

TIMEOUT = 10.0


def tls_context():
    """The clients' TLS settings: the ssl module's defaults, no certificate check."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def connect(port, tls=False):
    """A blocking connection to the server on port (over TLS if tls, handshake done)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        sock = tls_context().wrap_socket(sock, server_hostname="localhost")
    return sock


def exchange(sock, request, view):
    """Send request, then read exactly len(view) bytes of reply into view."""
    sock.sendall(request)
    got, size = 0, len(view)
    while got < size:
        n = sock.recv_into(view[got:])
        if not n:
            raise ConnectionError("server closed the connection")
        got += n


def exchange_on_new_connection(open_connection, request, view):
    """exchange() on a connection of its own, from open_connection(), closed after it."""
    with open_connection() as sock:
        exchange(sock, request, view)


def run_connection(sock, message, t0, t1, exchange=exchange):
    """Request/reply on one connection until t1; returns how many started in [t0, t1).

    exchange(sock, request, view) makes one; with exchange_on_new_connection,
    sock is a function that opens a new connection for each."""
    request, reply_size = message
    view = memoryview(bytearray(reply_size))
    count = 0
    now = time.monotonic()
    while now < t1:
        exchange(sock, request, view)
        count += now >= t0
        now = time.monotonic()
    return count


def client(port, message, conns, pipe, tls=False, reconnect=False):
    """One client process: conns connections to port (with reconnect, each a
    new one per request), window from pipe, count to pipe."""
    if reconnect:
        socks, work = [functools.partial(connect, port, tls)] * conns, exchange_on_new_connection
    else:
        socks, work = [connect(port, tls) for _ in range(conns)], exchange
    pipe.send("ready")
    if not pipe.poll(TIMEOUT):
        return
    t0, t1 = pipe.recv()
    with ThreadPoolExecutor(conns) as pool:
        pipe.send(sum(pool.map(lambda sock: run_connection(sock, message, t0, t1, work), socks)))
