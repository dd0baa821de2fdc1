"""asyncpg against a real PostgreSQL server, on goloop and on stock asyncio.

asyncpg is a protocol implementation in Cython over asyncio's streaming
transports: its pool, its COPY and LISTEN/NOTIFY paths and its query
cancellation (a second connection sending CancelRequest while the first
waits) all lean on the loop's transports, futures and timers.  Each test
runs on goloop with a 1 ms slice and on stock asyncio with the same
assertions (`loop_kind`); the latency test (`hog_kind`) runs short queries
beside a task that burns the CPU and must see them answered quickly, which
stock asyncio cannot do (its variant is a strict expected failure).

Two steps of asyncpg's are not atomic by accident but by design, and a
preemption inside either breaks it: with the default sslmode ("prefer") a
connect sends SSLRequest with a temporary protocol, then in one step calls
the real protocol's connection_made() (which writes the startup message)
and transport.set_protocol() — a reply delivered in between goes to the
temporary protocol, which drops it, and connect() hangs; and the pool's
release puts a connection back in the queue and then arms its inactivity
timer — a woken waiter run in between acquires, uses and releases that
connection first, and the first release raises InternalClientError.  goloop
preempts only the application's own code (preempt.c), never a library's
coroutine; the two tests at the end make those steps outlast the slice and
check that nothing breaks.  Every other test uses asyncpg's defaults.

The database is shared with concurrent runs (other CPython versions, other
sessions): every table and channel name carries this process's id and a
counter, and every table is dropped afterwards.
"""
import asyncio
import hashlib
import io
import itertools
import os
import time
import types

import pytest

from apps_helpers import GOLOOP, STOCK, expect_light_latency, light_requests_beside_hog, run

asyncpg = pytest.importorskip("asyncpg")
import asyncpg.pool  # noqa: E402  (after the importorskip)

# Generous bounds for "promptly": a cancelled pg_sleep(10) must end far
# before its 10 s, even on a loaded 2-core machine.
PROMPT = 5.0

_serial = itertools.count()


def unique_name(prefix):
    """A table/channel name no concurrent run uses."""
    return f"goloop_{prefix}_{os.getpid()}_{next(_serial)}"


class scratch_table:
    """`async with scratch_table(conn, "cols") as name`: a table of that
    shape, dropped on leaving whatever happened."""

    def __init__(self, conn, columns, prefix="t"):
        self.conn, self.columns, self.name = conn, columns, unique_name(prefix)

    async def __aenter__(self):
        await self.conn.execute(f"CREATE TABLE {self.name} ({self.columns})")
        return self.name

    async def __aexit__(self, *exc):
        await self.conn.execute(f"DROP TABLE IF EXISTS {self.name}")


def test_pool_serves_many_concurrent_queries(loop_kind, postgres_dsn):
    """200 tasks over a pool of at most 10 connections: every answer is the
    one its own query asked for, and the pool really grew past its minimum
    and stayed within its maximum."""
    async def main():
        async with asyncpg.create_pool(postgres_dsn, min_size=2, max_size=10) as pool:
            async def query(i):
                # The short sleep keeps connections busy so that the tasks
                # overlap and the pool has to hand out more than min_size.
                return await pool.fetchrow(
                    "SELECT $1::int * 3 AS tripled, md5($1::text) AS digest, "
                    "pg_backend_pid() AS pid FROM pg_sleep(0.002)", i)
            rows = await asyncio.gather(*(query(i) for i in range(200)))
            return [tuple(r) for r in rows], pool.get_size()

    rows, size = run(loop_kind, main)
    for i, (tripled, digest, _pid) in enumerate(rows):
        assert tripled == 3 * i
        assert digest == hashlib.md5(str(i).encode()).hexdigest()
    backends = {pid for *_, pid in rows}
    assert 2 < len(backends) <= 10, backends
    assert size <= 10


def test_transactions_commit_roll_back_and_nest(loop_kind, postgres_dsn):
    """A committed transaction is seen by another connection, one that
    raises is rolled back, and a failing savepoint inside a transaction
    undoes only its own rows."""
    async def main():
        conn = await asyncpg.connect(postgres_dsn)
        other = await asyncpg.connect(postgres_dsn)
        try:
            async with scratch_table(conn, "v text PRIMARY KEY") as t:
                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {t} VALUES ('committed')")
                    # Not visible outside before the commit.
                    invisible = await other.fetchval(f"SELECT count(*) FROM {t}")

                with pytest.raises(ZeroDivisionError):
                    async with conn.transaction():
                        await conn.execute(f"INSERT INTO {t} VALUES ('rolled back')")
                        1 / 0

                async with conn.transaction():
                    await conn.execute(f"INSERT INTO {t} VALUES ('outer before')")
                    with pytest.raises(asyncpg.UniqueViolationError):
                        async with conn.transaction():      # a savepoint
                            await conn.execute(f"INSERT INTO {t} VALUES ('inner')")
                            await conn.execute(f"INSERT INTO {t} VALUES ('committed')")
                    async with conn.transaction():          # a savepoint that holds
                        await conn.execute(f"INSERT INTO {t} VALUES ('inner kept')")
                    await conn.execute(f"INSERT INTO {t} VALUES ('outer after')")

                seen = await other.fetch(f"SELECT v FROM {t} ORDER BY v")
                return invisible, [r["v"] for r in seen], conn.is_in_transaction()
        finally:
            await other.close()
            await conn.close()

    invisible, seen, still_in_transaction = run(loop_kind, main)
    assert invisible == 0
    assert seen == ["committed", "inner kept", "outer after", "outer before"]
    assert not still_in_transaction


def test_prepared_statements_copy_and_large_fetch(loop_kind, postgres_dsn):
    """A prepared statement reused with many arguments, 20,000 rows in by
    COPY (copy_records_to_table) and out again by COPY (copy_from_query),
    by a plain fetch and by a cursor: every row comes back intact."""
    n = 20_000
    records = [(i, f"row {i}", i * 0.5) for i in range(n)]

    async def main():
        conn = await asyncpg.connect(postgres_dsn)
        try:
            async with scratch_table(conn, "id int PRIMARY KEY, label text, half float8") as t:
                status = await conn.copy_records_to_table(
                    t, records=records, columns=["id", "label", "half"])

                lookup = await conn.prepare(f"SELECT label, half FROM {t} WHERE id = $1")
                looked_up = [tuple(await lookup.fetchrow(i)) for i in range(0, n, 997)]
                param_types = [p.name for p in lookup.get_parameters()]

                fetched = [tuple(r) for r in await conn.fetch(f"SELECT * FROM {t} ORDER BY id")]

                out = io.BytesIO()
                await conn.copy_from_query(f"SELECT id, label FROM {t} ORDER BY id", output=out)

                async with conn.transaction():   # cursors live in a transaction
                    cursor_sum = 0
                    async for row in conn.cursor(f"SELECT id FROM {t}", prefetch=500):
                        cursor_sum += row["id"]
                return status, looked_up, param_types, fetched, out.getvalue(), cursor_sum
        finally:
            await conn.close()

    status, looked_up, param_types, fetched, copied, cursor_sum = run(loop_kind, main)
    assert status == f"COPY {n}"
    assert looked_up == [(f"row {i}", i * 0.5) for i in range(0, n, 997)]
    assert param_types == ["int4"]
    assert fetched == records
    assert copied.decode().splitlines() == [f"{i}\trow {i}" for i in range(n)]
    assert cursor_sum == n * (n - 1) // 2


def test_listen_notify_delivers_in_order(loop_kind, postgres_dsn):
    """Notifications sent from another connection reach add_listener's
    callback in order, with their channel, payload and sender; ones sent
    inside a transaction arrive only once it commits; after
    remove_listener nothing more arrives."""
    count = 100

    async def main():
        listener = await asyncpg.connect(postgres_dsn)
        sender = await asyncpg.connect(postgres_dsn)
        channel = unique_name("chan")
        received = asyncio.Queue()
        try:
            def on_notify(conn, pid, chan, payload):
                received.put_nowait((pid, chan, payload))

            await listener.add_listener(channel, on_notify)
            for i in range(count):
                await sender.execute("SELECT pg_notify($1, $2)", channel, f"payload {i}")
            got = [await asyncio.wait_for(received.get(), PROMPT) for _ in range(count)]

            async with sender.transaction():
                await sender.execute("SELECT pg_notify($1, 'in transaction')", channel)
                # A round trip on the listener lets anything already sent arrive.
                await listener.fetchval("SELECT 1")
                early = received.qsize()
            after_commit = await asyncio.wait_for(received.get(), PROMPT)

            await listener.remove_listener(channel, on_notify)
            await sender.execute("SELECT pg_notify($1, 'too late')", channel)
            await listener.fetchval("SELECT 1")
            await asyncio.sleep(0.1)
            return got, early, after_commit, received.qsize(), sender.get_server_pid(), channel
        finally:
            await sender.close()
            await listener.close()

    got, early, after_commit, late, sender_pid, channel = run(loop_kind, main)
    assert got == [(sender_pid, channel, f"payload {i}") for i in range(count)]
    assert early == 0
    assert after_commit == (sender_pid, channel, "in transaction")
    assert late == 0


async def _backend_state(observer, pid):
    """(state, query) of backend `pid` in pg_stat_activity."""
    row = await observer.fetchrow(
        "SELECT state, query FROM pg_stat_activity WHERE pid = $1", pid)
    return tuple(row)


async def _cancel_by_wait_for(conn):
    await asyncio.wait_for(conn.fetchval("SELECT pg_sleep(10)"), 0.3)


async def _cancel_by_timeout(conn):
    async with asyncio.timeout(0.3):
        await conn.fetchval("SELECT pg_sleep(10)")


async def _cancel_task(conn):
    task = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(10)"))
    await asyncio.sleep(0.3)
    task.cancel()
    await task


@pytest.mark.parametrize("cancel, raised", [
    (_cancel_by_wait_for, TimeoutError),
    (_cancel_by_timeout, TimeoutError),
    (_cancel_task, asyncio.CancelledError),
], ids=["wait_for", "timeout", "task.cancel"])
def test_cancelled_query_stops_on_the_server(loop_kind, postgres_dsn, cancel, raised):
    """pg_sleep(10) cancelled after 0.3 s ends promptly with the expected
    exception; the server really stopped it (the same backend answers a new
    query at once and pg_stat_activity no longer shows the sleep running)."""
    async def main():
        conn = await asyncpg.connect(postgres_dsn)
        observer = await asyncpg.connect(postgres_dsn)
        try:
            pid = conn.get_server_pid()
            started = time.monotonic()
            with pytest.raises(raised):
                await cancel(conn)
            cancelled_after = time.monotonic() - started

            started = time.monotonic()
            # A backend runs one query at a time: answering this at once
            # means the sleep is no longer running there.
            answer = await asyncio.wait_for(conn.fetchval("SELECT 40 + 2"), PROMPT)
            next_query_took = time.monotonic() - started
            state = await _backend_state(observer, pid)
            return cancelled_after, answer, next_query_took, state
        finally:
            await observer.close()
            await conn.close()

    cancelled_after, answer, next_query_took, (state, query) = run(loop_kind, main)
    assert 0.25 <= cancelled_after < PROMPT
    assert answer == 42
    assert next_query_took < PROMPT
    assert state == "idle" and "pg_sleep" not in query, (state, query)


def test_short_queries_answered_beside_a_cpu_hog(hog_kind, postgres_dsn):
    """While one task burns the CPU for 2 s without awaiting, four tasks keep
    making short queries over a pool; each round trip must stay short."""
    async def main():
        async with asyncpg.create_pool(postgres_dsn, min_size=4, max_size=4) as pool:
            async def light_request(n):
                assert await pool.fetchval("SELECT $1::int + 1", 41) == 42

            return await light_requests_beside_hog(light_request)

    latencies, answered_during_hog, rounds = run(hog_kind, main)
    expect_light_latency(latencies, "short query")
    assert rounds > 0
    # Queries kept being answered all along the 2 s, not just before or after.
    assert answered_during_hog >= 20, answered_during_hog


class _StartupThenWork(asyncpg.protocol.Protocol):
    """asyncpg's protocol, whose connection_made() goes on computing for
    50 ms after writing the startup message: the step that swaps protocols
    then outlasts the slice, as it now and then does on a busy machine."""

    def connection_made(self, transport):
        super().connection_made(transport)
        end = time.perf_counter() + 0.05
        while time.perf_counter() < end:
            pass


@pytest.mark.parametrize("kind", [GOLOOP, STOCK])
def test_connect_survives_a_preemption_during_the_protocol_swap(kind, postgres_dsn, monkeypatch):
    """connect() with the default sslmode, the protocol swap step made long
    (as a busy machine now and then makes it): the connection must still
    come up and answer."""
    monkeypatch.setattr(asyncpg.connect_utils, "protocol",
                        types.SimpleNamespace(Protocol=_StartupThenWork))

    async def main():
        conn = await asyncpg.connect(postgres_dsn, timeout=3)
        try:
            return await conn.fetchval("SELECT 6 * 7")
        finally:
            await conn.close()

    assert run(kind, main) == 42


@pytest.mark.parametrize("kind", [GOLOOP, STOCK])
def test_pool_release_survives_a_preemption_after_requeueing(kind, postgres_dsn, monkeypatch):
    """Two tasks share a pool of one connection; the first release goes on
    computing for 50 ms right after requeueing the connection.  Both must
    get their answers."""
    requeue = asyncpg.pool.PoolConnectionHolder._release
    first = [True]

    def requeue_then_work(holder):
        requeue(holder)
        if first[0]:
            first[0] = False
            end = time.perf_counter() + 0.05
            while time.perf_counter() < end:
                pass

    monkeypatch.setattr(asyncpg.pool.PoolConnectionHolder, "_release", requeue_then_work)

    async def main():
        async with asyncpg.create_pool(postgres_dsn, min_size=1, max_size=1) as pool:
            async def use(n):
                async with pool.acquire() as conn:
                    return await conn.fetchval("SELECT $1::int", n)
            return await asyncio.gather(use(1), use(2))

    assert run(kind, main) == [1, 2]
