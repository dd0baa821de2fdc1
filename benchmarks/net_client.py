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

client() is the body of one client process, forked by
benchmarks.workloads.network (a fork costs a millisecond where a fresh
interpreter costs tens, ten times per run).  It drives its connections on
threads (one each) and talks to its parent over a multiprocessing pipe, so
that all clients measure the same window:
  1. connect every connection, send "ready";
  2. receive (T0, T1), time.monotonic() values (system-wide on Linux): run
     requests from then on, counting those started in [T0, T1) (what runs
     before T0 is warm-up), stop at T1;
  3. send the count.
Bounded: every socket operation times out after TIMEOUT seconds, the run ends
at T1, and a parent silent for TIMEOUT seconds at step 2 ends the client.
"""
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


def run_connection(sock, message, t0, t1):
    """Request/reply on one connection until t1; returns how many started in [t0, t1)."""
    request, reply_size = message
    view = memoryview(bytearray(reply_size))
    count = 0
    now = time.monotonic()
    while now < t1:
        exchange(sock, request, view)
        count += now >= t0
        now = time.monotonic()
    return count


def client(port, message, conns, pipe, tls=False):
    """One client process: conns connections to port, window from pipe, count to pipe."""
    socks = [connect(port, tls) for _ in range(conns)]
    pipe.send("ready")
    if not pipe.poll(TIMEOUT):
        return
    t0, t1 = pipe.recv()
    with ThreadPoolExecutor(conns) as pool:
        pipe.send(sum(pool.map(lambda sock: run_connection(sock, message, t0, t1), socks)))
