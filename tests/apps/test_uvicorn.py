"""uvicorn (and hypercorn) serving a FastAPI app on goloop, with httpx's
AsyncClient and the websockets client as clients; and, with the same
assertions, on stock asyncio.

uvicorn is how most ASGI apps meet an event loop.  Its `--loop` takes a
"module:callable" loop factory, so `--loop goloop:new_event_loop` is the
whole switch; stock runs use `--loop asyncio` (uvicorn's "auto" would pick
uvloop, which is installed).  Each server is a child process
(apps_helpers.ServerProcess) running tests/apps/asgi_app.py, preempted at
1 ms on goloop, over both of uvicorn's HTTP implementations, each paired
with one of its websocket implementations: httptools with websockets'
sans-I/O protocol, h11 with wsproto.  The clients run in this process on a
loop of the same kind, httpx's AsyncClient and the websockets client, on
goloop's loop without preemption (`run_client` says why).

- the requests, and the lifespan, run on the loop asked for (goloop's
  EventLoop, or asyncio's selector loop, whose server never imports goloop);
- keep-alive: many sequential requests over one connection;
- concurrent requests through a pool of connections;
- a streamed response whose first chunk must reach the client before the
  client lets the server send the rest (a buffering server would deadlock);
- a POST body of 1 MiB echoed back intact;
- a websocket echo, and the loop its handler runs on;
- SIGTERM: uvicorn shuts down gracefully, the lifespan's shutdown runs, and
  it then re-raises the signal as its own exit status (uvicorn does that on
  every loop: -SIGTERM, not 0);
- `uvicorn.run(app, loop=<a goloop loop factory>)` from a script, with the
  factory's own 1 ms slice;
- latency: a request burning the CPU for HOG_SECONDS, and while it runs,
  light requests timed one after another: goloop preempts the hog and
  answers them in about a slice, stock asyncio makes them wait (`hog_kind`'s
  strict xfail); the hog's own answer shows goloop's preemption count grew;
  over httptools and over h11;
- hypercorn (goloop only): it has no loop option of its own (its worker
  classes are asyncio, uvloop and trio), so it runs on goloop either
  programmatically, `hypercorn.asyncio.serve` under `goloop.run`, or
  unchanged under `python -m goloop -m hypercorn` with `--workers 0`
  (hypercorn's worker processes are spawned, fresh interpreters that would
  not inherit goloop); a few requests, then SIGTERM: exit status 0 and the
  lifespan shut down.

Last, the atomicity libraries rely on: code between two awaits of a
library's is not interrupted on asyncio, and anyio's TaskGroup (Starlette's
StreamingResponse, httpx's connect) registers a task it created on the next
line, while uvicorn's h11 protocol finishes a response's h11 state after
writing its body.  goloop used to preempt there (with the slice in wall
time, a step merely descheduled on a loaded machine got there too) and
broke both; it now preempts a library only at an await
(csrc/cpython/preempt.c).  Each test widens that window to many slices.
The one strict expected failure left on goloop is the application's own
code: a task it creates may start before its creator's preempted step goes
on (test_a_new_task_waits_for_its_creator_to_yield).
"""
import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

httpx = pytest.importorskip("httpx", reason="the apps extra is not installed")
pytest.importorskip("uvicorn", reason="the apps extra is not installed")
from websockets.asyncio.client import connect as websocket_connect  # noqa: E402

import goloop
from apps_helpers import (GOLOOP, HOG_SECONDS, KINDS, STOCK, TIME_SLICE, ServerProcess, burn_cpu, child_env,
                          expect_light_latency, free_port, run)

APPS_DIR = os.path.dirname(os.path.abspath(__file__))
APP = "asgi_app:app"
EVENTS_ENV = "ASGI_APP_EVENTS"          # asgi_app.EVENTS_ENV (not imported: it imports FastAPI)

UVICORN_LOOP = {GOLOOP: "goloop:new_event_loop", STOCK: "asyncio"}
EXPECTED_LOOP = {
    GOLOOP: f"{goloop.EventLoop.__module__}.{goloop.EventLoop.__qualname__}",
    STOCK: f"{asyncio.SelectorEventLoop.__module__}.{asyncio.SelectorEventLoop.__qualname__}",
}
# Each HTTP implementation with the websocket implementation it is tried with.
WS_FOR_HTTP = {"httptools": "websockets-sansio", "h11": "wsproto"}

CLIENT_TIMEOUT = httpx.Timeout(30.0)    # a stalled server fails the test, not hangs it
KEEP_ALIVE_REQUESTS = 50
CONCURRENT_REQUESTS = 50
POST_BYTES = 1024 * 1024 + 7
LIGHT_REQUESTS = 20


# --- servers ---------------------------------------------------------------

def uvicorn_server(kind, http, events):
    """A ServerProcess running asgi_app under uvicorn on a loop of `kind`,
    its lifespan writing to the file `events`."""
    port = free_port()
    argv = ["-m", "uvicorn", APP, "--app-dir", APPS_DIR, "--host", "127.0.0.1",
            "--port", str(port), "--loop", UVICORN_LOOP[kind], "--http", http,
            "--ws", WS_FOR_HTTP[http],
            # Access lines would fill the pipe ServerProcess reads only at exit.
            "--no-access-log"]
    # cwd: not the repository root, whose goloop/ source directory would
    # shadow an installed goloop (sys.path[0] is the cwd under -m and -c).
    return ServerProcess(argv, port, kind, env={EVENTS_ENV: str(events)}, cwd=APPS_DIR)


@contextlib.contextmanager
def serving(server, log=None):
    """Start `server` (a ServerProcess); a failure inside carries the
    server's output (and the tail of its log file `log`) as a note."""
    with server:
        try:
            yield server
        except BaseException as exc:
            server.stop()
            exc.add_note(f"server output:\n{server.output[-4000:]}")
            if log is not None and os.path.exists(log):
                with open(log) as f:
                    exc.add_note(f"server log {log}:\n{f.read()[-4000:]}")
            raise


def base_url(server):
    return f"http://127.0.0.1:{server.port}"


def read_events(path):
    """The lifespan's trace: [(what, pid, loop name), ...]."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(what, int(pid), loop) for what, pid, loop in (line.split() for line in f)]


class Served:
    """A running uvicorn server, with what the tests need to know of it."""

    def __init__(self, kind, http, server, events):
        self.kind, self.http, self.server, self.events = kind, http, server, events
        self.url = base_url(server)


@pytest.fixture(scope="module", params=[(k, h) for k in KINDS for h in WS_FOR_HTTP],
                ids=lambda p: f"{p[0]}-{p[1]}")
def served(request, tmp_path_factory):
    """One uvicorn server per (loop kind, HTTP implementation), shared by
    the functional tests below: the same assertions hold on both kinds."""
    kind, http = request.param
    events = tmp_path_factory.mktemp("uvicorn") / "events"
    with uvicorn_server(kind, http, events) as server:
        yield Served(kind, http, server, events)


def run_client(kind, main, *args):
    """Run the client coroutine main(*args) on a loop of `kind`: stock
    asyncio's, or goloop's without preemption: the servers are what these
    tests preempt.  (A client preempted at 1 ms works — httpx's stack relies
    on its code between awaits running at once, which goloop keeps by
    preempting libraries only at an await: the anyio tests at the end of
    this file — but on 3.11, beside the gunicorn hogs, one light request in
    about four runs then took 1.3-1.7 s, not yet understood: the client's
    own steps were not preempted there.)"""
    if kind == GOLOOP:
        factory = lambda: goloop.new_event_loop(preempt=False)   # noqa: E731
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main(*args))


def client(url, **kwargs):
    return httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT, **kwargs)


async def get_json(http_client, path):
    response = await http_client.get(path)
    response.raise_for_status()
    return response.json()


def expect_loop_report(report, kind, pid=None):
    """A /loop (or /hog) answer says the request ran on `kind`'s loop; on
    stock asyncio goloop is not even loaded in the server."""
    assert report["loop"] == EXPECTED_LOOP[kind], report
    if kind == GOLOOP:
        assert isinstance(report["preemptions"], int), report
        assert report["time_slice"] == TIME_SLICE, report
    else:
        assert report["preemptions"] is None, report
        assert report["time_slice"] is None, report
    if pid is not None:
        assert report["pid"] == pid, report


async def wait_for_file(path, timeout=30.0):
    """Wait (without blocking the loop) until `path` exists."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        await asyncio.sleep(0.01)


# --- what a request sees -----------------------------------------------------

def test_requests_and_lifespan_run_on_the_chosen_loop(served):
    async def main():
        async with client(served.url) as http_client:
            return await get_json(http_client, "/loop")

    report = run_client(served.kind, main)
    expect_loop_report(report, served.kind, pid=served.server.proc.pid)
    assert ("startup", served.server.proc.pid, EXPECTED_LOOP[served.kind]) in read_events(served.events)


def test_keep_alive_serves_many_requests_on_one_connection(served):
    async def main():
        # One connection at most: every request must reuse it.
        async with client(served.url, limits=httpx.Limits(max_connections=1)) as http_client:
            answers, client_addresses = [], set()
            for _ in range(KEEP_ALIVE_REQUESTS):
                response = await http_client.get("/hello")
                answers.append(response.json())
                stream = response.extensions["network_stream"]
                client_addresses.add(stream.get_extra_info("client_addr"))
            return answers, client_addresses

    answers, client_addresses = run_client(served.kind, main)
    assert answers == [{"hello": "world", "pid": served.server.proc.pid}] * KEEP_ALIVE_REQUESTS
    assert len(client_addresses) == 1, client_addresses


def test_concurrent_requests_are_all_answered(served):
    async def main():
        async with client(served.url, limits=httpx.Limits(max_connections=10)) as http_client:
            paths = ["/hello" if i % 2 else "/loop" for i in range(CONCURRENT_REQUESTS)]
            responses = await asyncio.gather(*(http_client.get(p) for p in paths))
            return [(p, r.status_code, r.json()) for p, r in zip(paths, responses)]

    results = run_client(served.kind, main)
    assert len(results) == CONCURRENT_REQUESTS
    for path, status, body in results:
        assert status == 200, (path, body)
        if path == "/loop":
            expect_loop_report(body, served.kind, pid=served.server.proc.pid)
        else:
            assert body == {"hello": "world", "pid": served.server.proc.pid}


def test_streamed_response_arrives_chunk_by_chunk(served):
    token = uuid.uuid4().hex

    async def main():
        async with client(served.url) as http_client:
            async with http_client.stream("GET", "/stream", params={"token": token, "chunks": 4}) as response:
                assert response.status_code == 200
                lines = response.aiter_lines()
                # The server sends nothing more until released, so this line
                # can only arrive if the response is really streamed.
                first = await asyncio.wait_for(anext(lines), 10)
                released = await http_client.post(f"/stream/release/{token}")
                rest = [line async for line in lines]
                return response.headers.get("transfer-encoding"), first, released.json(), rest

    encoding, first, released, rest = run_client(served.kind, main)
    assert encoding == "chunked"
    assert first == "first"
    assert released == {"released": token}
    assert rest == ["chunk 1", "chunk 2", "chunk 3"]


def test_post_body_is_echoed_intact(served):
    body = os.urandom(POST_BYTES)

    async def main():
        async with client(served.url) as http_client:
            response = await http_client.post(
                "/echo", content=body, headers={"content-type": "application/octet-stream"})
            small = await http_client.post("/echo", json={"a": [1, 2, 3]})
            return response, small

    response, small = run_client(served.kind, main)
    assert response.status_code == 200
    assert response.headers["x-body-length"] == str(POST_BYTES)
    assert response.headers["x-body-sha256"] == hashlib.sha256(body).hexdigest()
    assert response.content == body
    assert small.json() == {"a": [1, 2, 3]}


def test_websocket_echo(served):
    url = served.url.replace("http://", "ws://") + "/ws"

    async def main():
        async with websocket_connect(url, open_timeout=30) as websocket:
            replies = []
            for message in ["hello", "é" * 1000, "loop", "bye"]:
                await websocket.send(message)
                replies.append(await asyncio.wait_for(websocket.recv(), 10))
            return replies

    replies = run_client(served.kind, main)
    assert replies == ["echo:hello", "echo:" + "é" * 1000, EXPECTED_LOOP[served.kind], "echo:bye"]


# --- shutdown ----------------------------------------------------------------

def test_sigterm_shuts_uvicorn_down_gracefully(loop_kind, tmp_path):
    events = tmp_path / "events"
    with serving(uvicorn_server(loop_kind, "httptools", events)) as server:
        async def main():
            async with client(base_url(server)) as http_client:
                return await get_json(http_client, "/loop")

        expect_loop_report(run_client(loop_kind, main), loop_kind, pid=server.proc.pid)
        returncode = server.stop(signal.SIGTERM)

    pid, loop = server.proc.pid, EXPECTED_LOOP[loop_kind]
    assert read_events(events) == [("startup", pid, loop), ("shutdown", pid, loop)], server.output
    assert f"Finished server process [{pid}]" in server.output, server.output
    # uvicorn re-raises the signal it shut down for once it is done.
    assert returncode == -signal.SIGTERM, (returncode, server.output)


def test_uvicorn_run_with_a_goloop_loop_factory(tmp_path):
    """uvicorn.run(..., loop=callable) from a script: the API form of
    --loop, here with the time slice given in the factory."""
    port = free_port()
    script = textwrap.dedent(f"""
        import functools
        import goloop, uvicorn
        from asgi_app import app

        uvicorn.run(app, host="127.0.0.1", port={port},
                    loop=functools.partial(goloop.new_event_loop, time_slice=0.001))
    """)
    # No GOLOOP_TIME_SLICE from child_env: the factory's own slice must do.
    with serving(ServerProcess(["-c", script], port, STOCK, cwd=APPS_DIR)) as server:
        async def main():
            async with client(base_url(server)) as http_client:
                before = await get_json(http_client, "/loop")
                hog = await get_json(http_client, "/hog?seconds=0.3")
                return before, hog

        before, hog = run_client(GOLOOP, main)
    # expect_loop_report checks the slice: the factory's 1 ms, not the default.
    expect_loop_report(before, GOLOOP, pid=server.proc.pid)
    expect_loop_report(hog, GOLOOP, pid=server.proc.pid)
    assert hog["preemptions"] > before["preemptions"], (before, hog)


# --- latency beside a CPU-heavy request ---------------------------------------

@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_light_requests_are_answered_beside_a_cpu_heavy_one(hog_kind, http, tmp_path):
    marker = str(tmp_path / "hog-started")
    with serving(uvicorn_server(hog_kind, http, tmp_path / "events")) as server:
        async def main():
            async with client(base_url(server)) as hog_client, client(base_url(server)) as light_client:
                before = await get_json(light_client, "/loop")     # also opens its connection
                hog = asyncio.create_task(hog_client.get(
                    "/hog", params={"seconds": HOG_SECONDS, "marker": marker}))
                await wait_for_file(marker)
                latencies = []
                for _ in range(LIGHT_REQUESTS):
                    start = time.perf_counter()
                    (await light_client.get("/hello")).raise_for_status()
                    latencies.append(time.perf_counter() - start)
                hog_report = (await hog).json()
                return before, hog_report, latencies

        before, hog_report, latencies = run_client(hog_kind, main)
    expect_light_latency(latencies)
    expect_loop_report(hog_report, hog_kind, pid=server.proc.pid)
    # The light requests got through because the hog was preempted.
    assert hog_report["preemptions"] > before["preemptions"], (before, hog_report)


# --- hypercorn ----------------------------------------------------------------

HYPERCORN_RUNNER = """
import sys
import goloop
from hypercorn.asyncio import serve
from hypercorn.config import Config
from asgi_app import app

config = Config()
config.bind = [f"127.0.0.1:{sys.argv[1]}"]
goloop.run(serve(app, config))
"""


async def hypercorn_checks(url):
    """What each hypercorn server is asked: the loop, keep-alive, a body."""
    async with client(url, limits=httpx.Limits(max_connections=1)) as http_client:
        report = await get_json(http_client, "/loop")
        hellos = [await get_json(http_client, "/hello") for _ in range(10)]
        echo = await http_client.post("/echo", content=b"x" * 100_000)
        return report, hellos, echo.content


def expect_hypercorn_answers(answers, kind, pid):
    report, hellos, echoed = answers
    expect_loop_report(report, kind, pid=pid)
    assert hellos == [{"hello": "world", "pid": pid}] * 10
    assert echoed == b"x" * 100_000


def test_hypercorn_serve_under_goloop_run(tmp_path):
    port = free_port()
    events = tmp_path / "events"
    with serving(ServerProcess(["-c", HYPERCORN_RUNNER, str(port)], port, GOLOOP,
                               env={EVENTS_ENV: str(events)}, cwd=APPS_DIR)) as server:
        expect_hypercorn_answers(run_client(GOLOOP, hypercorn_checks, base_url(server)),
                                 GOLOOP, server.proc.pid)
        returncode = server.stop(signal.SIGTERM)
    # serve() shuts down on SIGTERM by itself, the lifespan's shutdown included.
    assert returncode == 0, server.output
    pid, loop = server.proc.pid, EXPECTED_LOOP[GOLOOP]
    assert read_events(events) == [("startup", pid, loop), ("shutdown", pid, loop)], server.output


def test_hypercorn_cli_under_python_m_goloop(tmp_path):
    port = free_port()
    events = tmp_path / "events"
    argv = ["-m", "goloop", "-m", "hypercorn", "--workers", "0", "--bind", f"127.0.0.1:{port}", APP]
    with serving(ServerProcess(argv, port, GOLOOP, env={EVENTS_ENV: str(events)}, cwd=APPS_DIR)) as server:
        expect_hypercorn_answers(run_client(GOLOOP, hypercorn_checks, base_url(server)),
                                 GOLOOP, server.proc.pid)
        returncode = server.stop(signal.SIGTERM)
    assert returncode == 0, server.output
    pid, loop = server.proc.pid, EXPECTED_LOOP[GOLOOP]
    assert read_events(events) == [("startup", pid, loop), ("shutdown", pid, loop)], server.output


# --- the atomicity between awaits this stack relies on -----------------------

GOLOOP_RUNS_A_TASK_BEFORE_ITS_CREATOR_YIELDS = pytest.mark.xfail(
    strict=True,
    reason="goloop's documented semantics for the application's own code: a task created by "
    "a step that is then preempted may start (and finish) before its creator's step goes "
    "on; on asyncio it waits until its creator yields.  (A library's code is preempted only "
    "at an await, so anyio's TaskGroup, which relies on it, is safe: the test below.)")


@pytest.mark.parametrize("kind", [pytest.param(GOLOOP, marks=GOLOOP_RUNS_A_TASK_BEFORE_ITS_CREATOR_YIELDS),
                                  STOCK])
def test_a_new_task_waits_for_its_creator_to_yield(kind):
    """The asyncio invariant at the root of the anyio failures goloop had: a
    step that creates a task and then computes past its slice — here in the
    application's own code, which goloop preempts."""
    async def main():
        started = []

        async def child():
            started.append(True)

        task = asyncio.create_task(child())
        burn_cpu(0.02)                  # 20 slices of 1 ms: preempted on goloop
        seen_before_yielding = list(started)
        await task
        return seen_before_yielding

    assert run(kind, main) == []


ANYIO_TASK_GROUP_SCRIPT = """
import asyncio, sys, time
import anyio
import anyio._backends._asyncio as anyio_asyncio

def burn_cpu(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass

class SlowRegistration(anyio_asyncio.TaskState):
    # TaskGroup._spawn() creates the child task, then registers it with
    # TaskState(parent_id=..., cancel_scope=...): make that take 20 slices,
    # so that goloop preempts the creator between the two, every time.  (On a
    # loaded machine, being descheduled there has the same effect now and then.)
    def __init__(self, *args, **kwargs):
        if "parent_id" in kwargs:
            burn_cpu(0.02)
        super().__init__(*args, **kwargs)

anyio_asyncio.TaskState = SlowRegistration

async def main():
    async def child():
        await asyncio.sleep(0.05)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(child)
    except BaseException as exc:
        return f"{exc!r}"
    return "task group done"

if sys.argv[1] == "goloop":
    import goloop
    print(goloop.run(main(), time_slice=0.001))
else:
    print(asyncio.run(main()))
"""


@pytest.mark.parametrize("kind", [GOLOOP, STOCK])
def test_anyio_task_group_survives_a_preempted_spawn(kind):
    """anyio's TaskGroup (Starlette's StreamingResponse, httpx's connect)
    when its creator is preempted right after create_task(): on goloop the
    child enters its cancel scope before it is registered, and leaving it
    fails with "Attempted to exit a cancel scope that isn't the current
    tasks's current cancel scope" (seen in uvicorn's log under load).  In a
    child process: a variant of the race hangs the task group forever."""
    result = subprocess.run(
        [sys.executable, "-c", ANYIO_TASK_GROUP_SCRIPT, kind], cwd=APPS_DIR,
        env=child_env(kind), capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "task group done\n"), (result.stdout, result.stderr)


H11_LATE_END_OF_MESSAGE_SERVER = """
import sys, time
import h11, uvicorn

def burn_cpu(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass

send = h11.Connection.send

def send_end_of_message_late(self, event):
    # uvicorn writes a response's body, then sends h11's EndOfMessage: make
    # the step take 20 slices in between, as a descheduled step may.
    if type(event) is h11.EndOfMessage:
        burn_cpu(0.02)
    return send(self, event)

h11.Connection.send = send_end_of_message_late

async def app(scope, receive, send):
    # A plain ASGI app (no FastAPI to import): {"hello": "world"}.
    if scope["type"] == "http":
        body = b'{"hello":"world"}'
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

kind, port = sys.argv[1], int(sys.argv[2])
uvicorn.run(app, host="127.0.0.1", port=port, http="h11", access_log=False, lifespan="off",
            loop="goloop:new_event_loop" if kind == "goloop" else "asyncio")
"""


def get_then_close(port, path="/hello"):
    """One HTTP/1.1 request on a new connection, read to the end of its
    Content-Length body, then close at once: (status line, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = int(next(line.split(":")[1] for line in lines if line.lower().startswith("content-length:")))
        while len(body) < length:
            body += sock.recv(65536)
        return lines[0], body


@pytest.mark.parametrize("kind", [GOLOOP, STOCK])
def test_h11_response_survives_the_client_closing_after_the_body(kind):
    """A client that closes as soon as it has the whole body (Content-Length)
    while uvicorn's h11 protocol is still between writing that body and
    sending h11's EndOfMessage: on asyncio that cannot happen (one step), on
    goloop the step is preempted there, uvicorn's connection_lost() sends
    ConnectionClosed on the half-finished h11 state, and the response's step
    then fails ("Exception in ASGI application").  Seen without the widened
    window on the hog's connection in the latency test, under load."""
    port = free_port()
    with serving(ServerProcess(["-c", H11_LATE_END_OF_MESSAGE_SERVER, kind, str(port)], port, kind,
                               cwd=APPS_DIR)) as server:
        answers = [get_then_close(port) for _ in range(3)]
        time.sleep(0.3)                 # the server's steps finish after the client left
    assert answers == [("HTTP/1.1 200 OK", b'{"hello":"world"}')] * 3
    assert "Traceback" not in server.output, server.output[-3000:]
