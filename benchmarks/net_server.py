"""Servers for the network and HTTP benchmarks, on the event loop under test.

    python -m benchmarks.net_server LOOP KIND [--max-seconds 120] [--tls CERTFILE]

LOOP is a name of benchmarks.loops ("asyncio", "uvloop", "goloop", "rloop").
KIND is one of the four ways asyncio code serves a TCP echo, after uvloop's
echo benchmark, or the HTTP server:

  sock       loop.sock_accept, then a task per connection that loops on
             loop.sock_recv / loop.sock_sendall: the one variant whose every
             request is a task step (the thing goloop runs on a goroutine);
  streams    asyncio.start_server, a task per connection on reader.read /
             writer.write + drain: task steps plus the streams machinery;
  protocol   loop.create_server with an asyncio.Protocol whose data_received
             writes the data back: callbacks only, no task;
  buffered   an asyncio.BufferedProtocol that reads into its own buffer
             (get_buffer / buffer_updated): callbacks only, no copy on read;
  http       keep-alive HTTP/1.1 on httptools (benchmarks.http_server).

With --tls CERTFILE (a PEM file holding the private key and the
certificate), the kinds on the loop's transports (all but sock) serve over
TLS: the same server, given an ssl.SSLContext (asyncio's SSL protocol, or
the loop's own, on top of the TCP transport).

The server listens on 127.0.0.1 on a free port with TCP_NODELAY (which
Linux copies to every accepted socket, whatever the loop does) and prints
the port on stdout once it accepts connections.  It runs until its parent
closes its stdin (or dies) or --max-seconds pass, whichever comes first; the
watcher is a thread blocked in read(), so it costs the loop nothing.
"""
import argparse
import asyncio
import os
import socket
import ssl
import threading

from benchmarks.loops import LOOPS, run

# What the servers ask for at once (sock_recv, reader.read, the
# BufferedProtocol's buffer).  Not asyncio's transport max_size (256 KiB):
# glibc serves a malloc that large with mmap (the shrink to the bytes
# received with mremap, the free with munmap), three system calls and page
# faults per read.  asyncio's own transports pay that on every read (so
# goloop's, built on them, too); the servers add it nowhere else.
READ_SIZE = 64 * 1024
BACKLOG = 128


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = bytearray(READ_SIZE)

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        # A copy: the transport may keep what it could not send yet, and the
        # next read overwrites the buffer.
        self.transport.write(self.buffer[:nbytes])


async def echo_sock(loop, conn):
    with conn:
        while data := await loop.sock_recv(conn, READ_SIZE):
            await loop.sock_sendall(conn, data)


async def accept_sock(loop, listener):
    while True:
        conn, _ = await loop.sock_accept(listener)
        conn.setblocking(False)
        loop.create_task(echo_sock(loop, conn))


async def echo_stream(reader, writer):
    while data := await reader.read(READ_SIZE):
        writer.write(data)
        await writer.drain()
    writer.close()


async def start_sock(loop, listener, tls=None):    # no TLS: main() refuses --tls for it
    return loop.create_task(accept_sock(loop, listener))


async def start_streams(loop, listener, tls=None):
    return await asyncio.start_server(echo_stream, sock=listener, backlog=BACKLOG, ssl=tls)


async def start_protocol(loop, listener, tls=None, factory=EchoProtocol):
    return await loop.create_server(factory, sock=listener, backlog=BACKLOG, ssl=tls)


async def start_buffered(loop, listener, tls=None):
    return await start_protocol(loop, listener, tls, EchoBufferedProtocol)


async def start_http(loop, listener, tls=None):
    from benchmarks.http_server import HttpProtocol

    return await start_protocol(loop, listener, tls, HttpProtocol)


SERVERS = {
    "sock": start_sock,
    "streams": start_streams,
    "protocol": start_protocol,
    "buffered": start_buffered,
    "http": start_http,
}
TLS_KINDS = ("streams", "protocol", "buffered", "http")   # the kinds --tls applies to


def listening_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # accepted sockets inherit it
    sock.bind(("127.0.0.1", 0))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def tls_context(certfile):
    """The server's TLS settings: the ssl module's defaults, the key and certificate in certfile."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile)
    return context


async def serve(kind, certfile=None):
    loop = asyncio.get_running_loop()
    listener = listening_socket()
    port = listener.getsockname()[1]   # before: some loops take the socket over
    server = await SERVERS[kind](loop, listener, tls_context(certfile) if certfile else None)
    print(port, flush=True)
    await loop.create_future()   # serve until the process ends
    return server                # held until then: the sock_* accept task has no other owner


def exit_on_parent_gone(max_seconds):
    """End the process when stdin reaches EOF (parent closed it or died) or after max_seconds."""
    def watch():
        while os.read(0, 4096):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    timer = threading.Timer(max_seconds, os._exit, (0,))
    timer.daemon = True
    timer.start()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("loop", choices=LOOPS)
    ap.add_argument("kind", choices=sorted(SERVERS))
    ap.add_argument("--max-seconds", type=float, default=120.0)
    ap.add_argument("--tls", metavar="CERTFILE", help="serve over TLS with the key and certificate in CERTFILE (PEM)")
    args = ap.parse_args(argv)
    if args.tls and args.kind not in TLS_KINDS:
        ap.error(f"--tls: only for the kinds {', '.join(TLS_KINDS)}")
    exit_on_parent_gone(args.max_seconds)
    run(args.loop, serve(args.kind, args.tls))


if __name__ == "__main__":
    main()
