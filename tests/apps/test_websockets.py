"""The websockets library (its asyncio implementation: websockets.asyncio.
server.serve and websockets.asyncio.client.connect) on goloop, and with the
same assertions on stock asyncio.

websockets runs each connection as a handler task beside a background task
that reads frames, answers pings and completes the close handshake, over
the loop's transports with write-buffer flow control; permessage-deflate is
on by default.  The tests cover what an application relies on:

- many messages on one connection, one by one, and pipelined (all sent
  before any is read, so that data flows both ways at once), in order;
- large messages (3 MB binary, 1.1 MB text through permessage-deflate)
  through the frame assembler and flow control, checked by content;
- concurrent clients, each seeing its own messages only;
- the close handshake: a server-chosen and a client-chosen close code and
  reason, each seen by the other end;
- ping/pong from either end (the client's ping, and the server's, answered
  by the client's background reader while it waits in recv());
- latency: a connection whose handler burns the CPU for HOG_SECONDS while
  another client's echoes are timed (`hog_kind`: goloop answers them, stock
  asyncio cannot).

The server and its clients share the test's loop (apps_helpers' `run`,
bounded by `run_bounded`'s timeout so that a hang fails instead of stopping the suite),
except the latency test's timed client, which runs in a thread with
websockets' synchronous client: sharing the server's loop, on stock asyncio
it would not even send its echoes until the hog ended, and time them fast.

websockets' own code relies on nothing else of the loop running between
two of its awaits (Protocol.send_frame appends to a list data_received
swaps out; SimpleQueue.get checks, then makes the waiter put() wakes).
goloop used to preempt there, losing frames and wakeups now and then; it
now preempts only the application's code and a library's at an await
(csrc/cpython/preempt.c), and these exchanges are plain tests on both
loops.
"""
import asyncio
import contextlib
import hashlib
import random
import threading
import time

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect as connect_sync

from apps_helpers import GOLOOP, HighWater, burn_cpu, expect_light_latency, run, run_bounded

MAX_SIZE = 8 * 1024 * 1024     # both ends: above the largest test message
LIGHT_ECHOES = 20
PIPELINE_TIMEOUT = 5           # 2000 pipelined echoes take < 1 s

@contextlib.asynccontextmanager
async def echo_server(handler=None, **options):
    """A websockets server on 127.0.0.1 (port 0: picked free at bind time)
    running `handler` (default: echo every message back), with serve()'s
    `options`; yields its ws:// URI."""
    async with serve(handler or echo, "127.0.0.1", 0, max_size=MAX_SIZE, **options) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}"


async def echo(ws):
    async for message in ws:
        await ws.send(message)


# --- many messages ---------------------------------------------------------

async def lockstep_echoes(count):
    async with echo_server() as uri, connect(uri) as ws:
        answers = []
        for i in range(count):
            await ws.send(f"message {i}")
            answers.append(await ws.recv())
        return answers


def test_many_messages_echoed_one_by_one(loop_kind):
    assert run_bounded(loop_kind, lockstep_echoes, 1000) == [f"message {i}" for i in range(1000)]


async def pipelined_echoes(count):
    """Send `count` messages before reading any, then read their echoes:
    what came back, in order, up to the last one or the first out of place
    (or what came within PIPELINE_TIMEOUT)."""
    # A short close timeout: after a lost message the close handshake may be
    # lost too, and would be waited for 10 s at each end.
    quick_close = {"close_timeout": 1}
    async with echo_server(**quick_close) as uri, connect(uri, **quick_close) as ws:
        # The replies queue up in the client's and the server's buffers
        # while the client still sends: traffic both ways at once.
        for i in range(count):
            await ws.send(f"message {i}")
        answers = []
        # A lost message would otherwise be waited for forever.
        async with asyncio.timeout(PIPELINE_TIMEOUT):
            for i in range(count):
                answers.append(await ws.recv())
                if answers[-1] != f"message {i}":
                    break   # one is missing: the test fails, no need to wait
        return answers


def test_pipelined_messages_all_echoed_in_order(loop_kind):
    # On goloop most runs lose a frame (the first bug above): here the
    # client sends while the server's echoes arrive.
    assert run_bounded(loop_kind, pipelined_echoes, 2000) == [f"message {i}" for i in range(2000)]


# --- large messages --------------------------------------------------------

def large_text(size):
    """`size` characters of mixed one- to four-byte UTF-8, so that frame
    boundaries fall inside characters.  A random block of prime length,
    repeated: random enough for that, cheap to make, and compressible."""
    rng = random.Random(7)
    block = "".join(rng.choice("aé€😀") for _ in range(4099))
    return (block * (size // len(block) + 1))[:size]


async def echo_large(binary, text):
    async with echo_server() as uri:
        # Incompressible megabytes through permessage-deflate would time
        # zlib, not the loop: the random bytes go uncompressed, the
        # (compressible) text through deflate, as negotiated by default.
        async with connect(uri, max_size=MAX_SIZE, compression=None) as ws:
            await ws.send(binary)
            binary_back = await ws.recv()
        async with connect(uri, max_size=MAX_SIZE) as ws:
            await ws.send(text)
            text_back = await ws.recv()
    return binary_back, text_back


def test_large_messages_echoed_intact(loop_kind):
    binary = random.Random(8).randbytes(3 * 1024 * 1024 + 7)
    text = large_text(440_000)   # ~1.1 MB of UTF-8
    binary_back, text_back = run_bounded(loop_kind, echo_large, binary, text)
    assert isinstance(binary_back, bytes)
    assert hashlib.sha256(binary_back).digest() == hashlib.sha256(binary).digest()
    assert isinstance(text_back, str) and text_back == text


# --- concurrent clients ----------------------------------------------------

async def concurrent_clients(clients, messages):
    open_now = HighWater()

    async def counting_echo(ws):
        with open_now:
            await echo(ws)

    async def client(uri, n):
        async with connect(uri) as ws:
            replies = []
            for i in range(messages):
                await ws.send(f"client {n} message {i}")
                replies.append(await ws.recv())
                # Yield between messages so that the clients interleave.
                await asyncio.sleep(0.001)
            return replies

    async with echo_server(counting_echo) as uri:
        replies = await asyncio.gather(*(client(uri, n) for n in range(clients)))
    return replies, open_now.most


def test_concurrent_clients_each_get_their_own_echoes(loop_kind):
    replies, most_open = run_bounded(loop_kind, concurrent_clients, 20, 20)
    assert replies == [[f"client {n} message {i}" for i in range(20)] for n in range(20)]
    assert most_open > 1, "the clients never overlapped"


# --- close handshake -------------------------------------------------------

async def close_handshakes():
    loop = asyncio.get_running_loop()
    server_saw = {"/server-closes": loop.create_future(), "/client-closes": loop.create_future()}

    async def closing_echo(ws):
        """Echo; 'close CODE' closes with CODE.  What the server saw of the
        close goes into server_saw[path]."""
        try:
            async for message in ws:
                if message.startswith("close "):
                    await ws.close(int(message.split()[1]), "server bye")
                else:
                    await ws.send(message)
        except ConnectionClosedError:
            pass   # what iterating does after a close code other than 1000/1001
        finally:
            server_saw[ws.request.path].set_result((ws.close_code, ws.close_reason))

    seen = {}
    async with echo_server(closing_echo) as uri:
        async with connect(f"{uri}/server-closes") as ws:
            await ws.send("close 4001")
            try:
                await ws.recv()
            except ConnectionClosedError as exc:   # not OK: 4001 is not 1000/1001
                seen["client_got"] = (exc.rcvd.code, exc.rcvd.reason)
        async with connect(f"{uri}/client-closes") as ws:
            await ws.send("still there?")
            assert await ws.recv() == "still there?"
            await ws.close(4002, "client bye")
        seen["server_saw"] = {
            path: await asyncio.wait_for(saw, 10) for path, saw in server_saw.items()}
    return seen


def test_close_codes_and_reasons_reach_the_other_end(loop_kind):
    seen = run_bounded(loop_kind, close_handshakes)
    assert seen["client_got"] == (4001, "server bye")
    assert seen["server_saw"] == {
        # The client echoes the server's close frame back, as RFC 6455 says.
        "/server-closes": (4001, "server bye"),
        "/client-closes": (4002, "client bye"),
    }


# --- ping ------------------------------------------------------------------

async def pings_both_ways():
    async def pinging_echo(ws):
        async for message in ws:
            if message == "ping me":
                pong_received = await ws.ping(b"from server")
                latency = await asyncio.wait_for(pong_received, 10)
                await ws.send(f"pong after {latency:.6f}")
            else:
                await ws.send(message)

    async with echo_server(pinging_echo) as uri, connect(uri) as ws:
        pong_received = await ws.ping(b"from client")
        client_latency = await asyncio.wait_for(pong_received, 10)
        # The client's background reader answers the server's ping while
        # this task waits in recv().
        await ws.send("ping me")
        server_report = await asyncio.wait_for(ws.recv(), 10)
        await ws.send("after the pings")
        after = await ws.recv()
    return client_latency, server_report, after


def test_pings_answered_both_ways(loop_kind):
    client_latency, server_report, after = run_bounded(loop_kind, pings_both_ways)
    assert 0 <= client_latency < 10
    assert server_report.startswith("pong after ")
    assert 0 <= float(server_report.split()[-1]) < 10
    assert after == "after the pings"


# --- latency beside a CPU-heavy handler --------------------------------------

def time_light_echoes(uri, client_ready, hog_started):
    """In a thread, with the synchronous client: connect and echo once, say
    so, wait until the hog burns, then time LIGHT_ECHOES echoes; (latencies,
    when the first was answered)."""
    with connect_sync(f"{uri}/light") as ws:
        ws.send("hello")
        assert ws.recv(timeout=30) == "hello"
        client_ready.set()
        assert hog_started.wait(30)
        latencies, first_done = [], None
        for i in range(LIGHT_ECHOES):
            start = time.perf_counter()
            ws.send(f"light {i}")
            assert ws.recv(timeout=30) == f"light {i}"
            latencies.append(time.perf_counter() - start)
            first_done = first_done or time.perf_counter()
        return latencies, first_done


async def light_echoes_beside_hog():
    client_ready = threading.Event()
    hog_started = threading.Event()
    hog_ended = []

    async def hog_or_echo(ws):
        if ws.request.path != "/hog":
            await echo(ws)
            return
        assert await ws.recv() == "burn"
        hog_started.set()
        rounds = burn_cpu()   # no await: only preemption lets others run
        hog_ended.append(time.perf_counter())
        await ws.send(str(rounds))

    async with echo_server(hog_or_echo) as uri:
        timing = asyncio.create_task(
            asyncio.to_thread(time_light_echoes, uri, client_ready, hog_started))
        # Only once the light client is connected: on stock asyncio its
        # handshake during the hog would wait for it untimed.
        assert await asyncio.to_thread(client_ready.wait, 30)
        async with connect(f"{uri}/hog") as ws:
            await ws.send("burn")
            hog_rounds = int(await ws.recv())
        latencies, first_done = await timing
    return latencies, first_done, hog_ended[0], hog_rounds


def test_light_echoes_answered_beside_cpu_heavy_handler(hog_kind):
    latencies, first_light_done, hog_ended, hog_rounds = run_bounded(hog_kind, light_echoes_beside_hog)
    expect_light_latency(latencies, "light echo")
    assert hog_rounds > 0
    # The echoes were timed while the hog still burned, not after.
    assert first_light_done < hog_ended
