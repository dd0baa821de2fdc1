"""The ASGI application the server tests (test_uvicorn.py, test_gunicorn.py)
run in child processes: a FastAPI app whose routes report what the tests
need to see from outside the server.

- GET  /hello            a light JSON answer (what latency is measured on)
- GET  /loop             which event loop class runs the request, the pid,
                         goloop.stats()["preemptions"] when goloop is loaded
                         (None when it is not: the stock server must not even
                         import goloop), and goloop's time slice
- GET  /hog              burns the CPU for ?seconds= with no await (the
                         CPU-heavy request), then answers as /loop; with
                         ?marker=PATH it first writes its pid to PATH, so a
                         test knows it has started even when the server can
                         answer nothing else
- GET  /block            time.sleep(?seconds=) inside the loop, within
                         goloop.atomic() when goloop is loaded (goloop would
                         otherwise preempt the sleep: its signal handler runs
                         inside sleep's retry), so the process accepts nothing
                         meanwhile (a test uses it to make the other gunicorn
                         worker take the next connection)
- GET  /stream           a streamed body: the first chunk, then nothing
                         until POST /stream/release/{token}, then the rest;
                         a server that buffered the body would never send the
                         first chunk the client waits for before releasing
- POST /echo             the body back, with its length and SHA-256 in headers
- WS   /ws               echoes text frames; the frame "loop" is answered
                         with the loop class that runs the handler
- lifespan               appends "startup PID LOOP" and "shutdown PID LOOP"
                         to the file named by $ASGI_APP_EVENTS

Everything is `async def` on purpose: FastAPI runs plain `def` routes in a
thread pool, and the point is what happens on the event loop.  The app does
not import the tests' helpers (apps_helpers imports goloop), so that a
server on stock asyncio stays entirely stock.
"""
import asyncio
import contextlib
import hashlib
import os
import sys
import time

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse

EVENTS_ENV = "ASGI_APP_EVENTS"


def loop_name():
    """module.Class of the event loop running the caller."""
    loop_type = type(asyncio.get_running_loop())
    return f"{loop_type.__module__}.{loop_type.__qualname__}"


def preemptions():
    """goloop's preemption count in this process, or None if goloop is not
    loaded here."""
    goloop = sys.modules.get("goloop")
    return goloop.stats()["preemptions"] if goloop is not None else None


def loop_report():
    """What /loop and /hog say about the process and its loop."""
    return {"loop": loop_name(), "pid": os.getpid(), "preemptions": preemptions(),
            # goloop's loop keeps its time slice (seconds) in _time_slice.
            "time_slice": getattr(asyncio.get_running_loop(), "_time_slice", None)}


def unpreemptible():
    """A context in which no loop preempts the caller: goloop.atomic() if
    goloop is loaded, else nothing (stock asyncio never preempts)."""
    goloop = sys.modules.get("goloop")
    return goloop.atomic() if goloop is not None else contextlib.nullcontext()


def record_event(what):
    """Append 'what PID LOOP' to $ASGI_APP_EVENTS (if set): the lifespan's
    trace, read by the tests after the server is gone."""
    path = os.environ.get(EVENTS_ENV)
    if path:
        with open(path, "a") as f:
            f.write(f"{what} {os.getpid()} {loop_name()}\n")


def write_marker(path):
    """Write this pid to `path` in one step (rename), so that a test polling
    for the file never reads it half-written."""
    if path:
        with open(path + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.replace(path + ".tmp", path)


def burn_cpu(seconds):
    """Pure-Python work for `seconds` of wall time, with no await (as
    apps_helpers.burn_cpu, which this app does not import)."""
    end = time.perf_counter() + seconds
    rounds = 0
    while time.perf_counter() < end:
        sum(i * i for i in range(200))
        rounds += 1
    return rounds


@contextlib.asynccontextmanager
async def lifespan(app):
    record_event("startup")
    yield
    record_event("shutdown")


app = FastAPI(lifespan=lifespan)

# token -> the Event that lets /stream send the rest of its body.
_stream_releases = {}


def _stream_release(token):
    return _stream_releases.setdefault(token, asyncio.Event())


@app.get("/hello")
async def hello():
    return {"hello": "world", "pid": os.getpid()}


@app.get("/loop")
async def which_loop():
    return loop_report()


@app.get("/hog")
async def hog(seconds: float = 2.0, marker: str = ""):
    write_marker(marker)
    rounds = burn_cpu(seconds)
    return {"rounds": rounds, **loop_report()}


@app.get("/block")
async def block(seconds: float = 1.0, marker: str = ""):
    write_marker(marker)
    with unpreemptible():
        time.sleep(seconds)
    return {"pid": os.getpid()}


@app.get("/stream")
async def stream(token: str, chunks: int = 4):
    release = _stream_release(token)

    async def body():
        yield b"first\n"
        await asyncio.wait_for(release.wait(), 30)
        for i in range(1, chunks):
            yield f"chunk {i}\n".encode()
        _stream_releases.pop(token, None)

    return StreamingResponse(body(), media_type="text/plain")


@app.post("/stream/release/{token}")
async def stream_release(token: str):
    _stream_release(token).set()
    return {"released": token}


@app.post("/echo")
async def echo(request: Request):
    body = await request.body()
    return Response(
        body,
        media_type=request.headers.get("content-type", "application/octet-stream"),
        headers={"x-body-length": str(len(body)), "x-body-sha256": hashlib.sha256(body).hexdigest(),
                 "x-pid": str(os.getpid())})


@app.websocket("/ws")
async def websocket_echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(loop_name() if text == "loop" else f"echo:{text}")
    except WebSocketDisconnect:
        pass
