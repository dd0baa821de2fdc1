"""redis-py's asyncio client (redis.asyncio) against a real Redis server, on
goloop and on stock asyncio.

redis-py speaks RESP over asyncio streams (StreamReader/StreamWriter), keeps
its connections in a pool guarded by asyncio primitives, runs pub/sub on a
connection of its own and waits for blocking commands (BLPOP) with the
connection parked in a read.  Each test runs on goloop with a 1 ms slice and
on stock asyncio with the same assertions (`loop_kind`); the latency test
(`hog_kind`) makes short commands beside a task that burns the CPU and must
see them answered quickly, which stock asyncio cannot do (its variant is a
strict expected failure).

The server is shared with concurrent runs: every key and channel carries
this process's id and a counter, and the keys are deleted afterwards.
"""
import asyncio
import contextlib
import itertools
import os
import time

import pytest

from apps_helpers import expect_light_latency, light_requests_beside_hog, run

aioredis = pytest.importorskip("redis.asyncio")
from redis.exceptions import WatchError  # noqa: E402  (after the importorskip)

# Generous bound for "promptly" on a loaded 2-core machine.
PROMPT = 5.0

_serial = itertools.count()


def unique_prefix():
    """A key/channel prefix no concurrent run uses."""
    return f"goloop:{os.getpid()}:{next(_serial)}:"


@contextlib.asynccontextmanager
async def client_and_prefix(url, **options):
    """A decoding client and a fresh prefix; the prefix's keys are deleted
    and the client closed on leaving."""
    client = aioredis.from_url(url, decode_responses=True, **options)
    prefix = unique_prefix()
    try:
        yield client, prefix
    finally:
        leftovers = [k async for k in client.scan_iter(match=prefix + "*")]
        if leftovers:
            await client.delete(*leftovers)
        await client.aclose()


def test_commands_on_strings_hashes_lists_sets_and_expiry(loop_kind, redis_url):
    """Each data type's basic commands give what Redis documents, and keys
    with an expiry are gone once it has passed."""
    async def main():
        async with client_and_prefix(redis_url) as (r, p):
            out = {}
            await r.set(p + "s", "hello")
            out["append"] = await r.append(p + "s", " world")
            out["get"] = await r.get(p + "s")
            out["incrby"] = [await r.incrby(p + "n", 5), await r.incrby(p + "n", -2)]
            out["mget"] = await r.mget(p + "s", p + "n", p + "missing")

            await r.hset(p + "h", mapping={"a": "1", "b": "2"})
            out["hincrby"] = await r.hincrby(p + "h", "a", 10)
            out["hgetall"] = await r.hgetall(p + "h")
            out["hdel"] = await r.hdel(p + "h", "b", "nope")

            await r.rpush(p + "l", "b", "c")
            await r.lpush(p + "l", "a")
            out["lrange"] = await r.lrange(p + "l", 0, -1)
            out["lpop"] = await r.lpop(p + "l")
            out["llen"] = await r.llen(p + "l")

            out["sadd"] = await r.sadd(p + "set", "x", "y", "z", "x")
            out["srem"] = await r.srem(p + "set", "y")
            out["smembers"] = await r.smembers(p + "set")
            out["sismember"] = [await r.sismember(p + "set", "x"),
                                await r.sismember(p + "set", "y")]

            await r.set(p + "short", "v", px=300)
            out["pttl"] = await r.pttl(p + "short")
            await r.set(p + "long", "v")
            await r.expire(p + "long", 100)
            out["ttl"] = await r.ttl(p + "long")
            await asyncio.sleep(0.5)
            out["expired"] = [await r.get(p + "short"), await r.exists(p + "short")]
            out["still"] = await r.get(p + "long")
            out["deleted"] = await r.delete(p + "long", p + "never")
            return out

    out = run(loop_kind, main)
    assert out["append"] == len("hello world")
    assert out["get"] == "hello world"
    assert out["incrby"] == [5, 3]
    assert out["mget"] == ["hello world", "3", None]
    assert out["hincrby"] == 11
    assert out["hgetall"] == {"a": "11", "b": "2"}
    assert out["hdel"] == 1
    assert out["lrange"] == ["a", "b", "c"]
    assert out["lpop"] == "a" and out["llen"] == 2
    assert out["sadd"] == 3 and out["srem"] == 1
    assert out["smembers"] == {"x", "z"}
    assert out["sismember"] == [True, False]
    assert 0 < out["pttl"] <= 300
    assert 90 <= out["ttl"] <= 100
    assert out["expired"] == [None, 0]
    assert out["still"] == "v" and out["deleted"] == 1


def test_pipelines_transactional_plain_and_watched(loop_kind, redis_url):
    """A MULTI/EXEC pipeline returns each command's result in order; a plain
    pipeline of 500 commands too; a WATCHed key changed by another client
    makes EXEC fail with WatchError and leaves the other client's value."""
    async def main():
        async with client_and_prefix(redis_url) as (r, p), \
                client_and_prefix(redis_url) as (other, _):
            async with r.pipeline(transaction=True) as pipe:
                pipe.set(p + "k", "1").incr(p + "k").get(p + "k")
                pipe.rpush(p + "l", "a", "b").lrange(p + "l", 0, -1)
                transactional = await pipe.execute()

            async with r.pipeline(transaction=False) as pipe:
                for i in range(500):
                    pipe.incrby(p + "sum", i)
                plain = await pipe.execute()

            async with r.pipeline(transaction=True) as pipe:
                await pipe.watch(p + "k")
                seen = int(await pipe.get(p + "k"))     # immediate mode while watching
                await other.set(p + "k", "100")         # someone else writes meanwhile
                pipe.multi()
                pipe.set(p + "k", seen + 1)
                with pytest.raises(WatchError):
                    await pipe.execute()
            return transactional, plain, seen, await r.get(p + "k")

    transactional, plain, seen, final = run(loop_kind, main)
    assert transactional == [True, 2, "2", 2, ["a", "b"]]
    assert plain == list(itertools.accumulate(range(500)))
    assert seen == 2
    assert final == "100"


async def _next_message(pubsub):
    """The next pub/sub message (subscription confirmations included)."""
    deadline = time.monotonic() + PROMPT
    while time.monotonic() < deadline:
        message = await pubsub.get_message(timeout=PROMPT)
        if message is not None:
            return message
    raise TimeoutError("no pub/sub message")


def test_pubsub_subscribe_psubscribe_in_order_and_unsubscribe(loop_kind, redis_url):
    """Messages published by another client reach a channel subscription and
    a pattern subscription in publishing order, each with its channel (and
    pattern) and data; after unsubscribing nobody receives them."""
    count = 60

    async def main():
        async with client_and_prefix(redis_url) as (publisher, p), \
                client_and_prefix(redis_url) as (subscriber, _):
            direct, pattern = p + "direct", p + "pat.*"
            pubsub = subscriber.pubsub()
            try:
                await pubsub.subscribe(direct)
                await pubsub.psubscribe(pattern)
                # Wait for both confirmations: the server subscribed us
                # before the first PUBLISH from the other connection.
                confirmations = [await _next_message(pubsub) for _ in range(2)]

                receivers, expected = [], []
                for i in range(count):
                    channel = direct if i % 2 else f"{p}pat.{i}"
                    receivers.append(await publisher.publish(channel, f"m{i}"))
                    expected.append((channel, f"m{i}"))
                messages = [await _next_message(pubsub) for _ in range(count)]

                await pubsub.unsubscribe(direct)
                await pubsub.punsubscribe(pattern)
                goodbyes = [await _next_message(pubsub) for _ in range(2)]
                after = [await publisher.publish(direct, "late"),
                         await publisher.publish(p + "pat.x", "late")]
            finally:
                await pubsub.aclose()
            return (direct, pattern, confirmations, receivers, expected, messages,
                    goodbyes, after)

    direct, pattern, confirmations, receivers, expected, messages, goodbyes, after = \
        run(loop_kind, main)
    assert [(m["type"], m["channel"]) for m in confirmations] == [
        ("subscribe", direct), ("psubscribe", pattern)]
    assert receivers == [1] * count
    assert [(m["channel"], m["data"]) for m in messages] == expected
    for m in messages:
        if m["channel"] == direct:
            assert m["type"] == "message"
        else:
            assert m["type"] == "pmessage" and m["pattern"] == pattern
    assert sorted(m["type"] for m in goodbyes) == ["punsubscribe", "unsubscribe"]
    assert after == [0, 0]


def test_pool_under_200_concurrent_increments(loop_kind, redis_url):
    """200 tasks share a blocking pool of at most 10 connections, each
    adding its own amount: the total is exact, and the server saw more than
    one and at most ten of the pool's connections."""
    async def main():
        name = unique_prefix().replace(":", "-").strip("-")
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=10, timeout=PROMPT * 4,
            decode_responses=True, client_name=name)
        async with client_and_prefix(redis_url) as (admin, p):
            r = aioredis.Redis(connection_pool=pool)
            try:
                async def add(i):
                    await r.incrby(p + "total", i)
                    return await r.incr(p + "calls")
                call_numbers = await asyncio.gather(*(add(i) for i in range(200)))
                clients = [c for c in await admin.client_list() if c["name"] == name]
                return call_numbers, await admin.get(p + "total"), len(clients)
            finally:
                await r.aclose()
                await pool.disconnect()

    call_numbers, total, connections = run(loop_kind, main)
    assert sorted(call_numbers) == list(range(1, 201))
    assert int(total) == sum(range(200))
    assert 1 < connections <= 10, connections


def test_blpop_times_out_and_is_woken_by_another_client(loop_kind, redis_url):
    """BLPOP on an empty list returns None after its timeout; BLPOP waiting
    on a list returns the element another client pushes, as soon as it is
    pushed; other commands go on meanwhile on other connections."""
    async def main():
        async with client_and_prefix(redis_url) as (waiter, p), \
                client_and_prefix(redis_url) as (pusher, _):
            started = time.monotonic()
            timed_out = await waiter.blpop([p + "empty"], timeout=0.3)
            waited = time.monotonic() - started

            blocked = asyncio.create_task(waiter.blpop([p + "queue"], timeout=PROMPT * 2))
            await asyncio.sleep(0.2)
            was_blocked = not blocked.done()
            pings = [await pusher.ping() for _ in range(5)]
            pushed_at = time.monotonic()
            await pusher.rpush(p + "queue", "wake up")
            popped = await blocked
            woken_after = time.monotonic() - pushed_at
            return timed_out, waited, was_blocked, pings, popped, woken_after, p

    timed_out, waited, was_blocked, pings, popped, woken_after, p = run(loop_kind, main)
    assert timed_out is None
    assert 0.25 <= waited < PROMPT
    assert was_blocked and pings == [True] * 5
    assert list(popped) == [p + "queue", "wake up"]
    assert woken_after < PROMPT


def test_short_commands_answered_beside_a_cpu_hog(hog_kind, redis_url):
    """While one task burns the CPU for 2 s without awaiting, four tasks keep
    making short commands over a pool; each round trip must stay short."""
    async def main():
        async with client_and_prefix(redis_url, max_connections=8) as (r, p):
            async def light_request(n):
                count = await r.incr(f"{p}light{n}")
                assert int(await r.get(f"{p}light{n}")) >= count

            return await light_requests_beside_hog(light_request)

    latencies, answered_during_hog, rounds = run(hog_kind, main)
    expect_light_latency(latencies, "short command")
    assert rounds > 0
    # Commands kept being answered all along the 2 s, not just before or after.
    assert answered_during_hog >= 20, answered_during_hog
