"""Keep-alive HTTP/1.1 server protocol for the HTTP benchmark (httptools parser).

Served by `python -m benchmarks.net_server LOOP http`.  An asyncio.Protocol
feeds what it receives to httptools.HttpRequestParser (llhttp, the parser
uvicorn uses) and answers every complete request with the same small
response, keeping the connection open unless the client asked to close it.
Callbacks only, no task per request: what is measured is the loop's
transport and callback path under an HTTP load generator (wrk), as in
uvloop's HTTP benchmark.  REQUEST is what the Python fallback client
(benchmarks.net_client --http) sends.
"""
import asyncio

try:
    import httptools
except ImportError:    # REQUEST and RESPONSE are still of use; serving needs httptools
    httptools = None

BODY = b"Hello, World!"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: %d\r\n"
    b"\r\n%s" % (len(BODY), BODY)
)
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class HttpProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    # httptools.HttpRequestParser callback
    def on_message_complete(self):
        self.transport.write(RESPONSE)
        if not self.parser.should_keep_alive():
            self.transport.close()
