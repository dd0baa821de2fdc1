"""goloop.await_() under real libraries: a blocking-style HTTP client facade
over aiohttp's ClientSession, called from plain functions inside async
handlers of an aiohttp server, and a synchronous SQLAlchemy ORM hook that
needs an async lookup.  goloop only: stock asyncio has no await_().

The loop runs with the application tests' 1 ms slice (apps_helpers), so the
awaited library code is also preempted where the library rule allows.
"""
import asyncio
import time

import pytest
from aiohttp import ClientSession, web

import goloop
from apps_helpers import GOLOOP, run_bounded

SLOW = 0.2   # the upstream's answer time


class BlockingHTTP:
    """What a synchronous SDK looks like: plain methods that return data.
    Underneath, aiohttp, driven by goloop.await_()."""

    def __init__(self, base):
        self.base = base
        self.session = goloop.await_(self._open())

    @staticmethod
    async def _open():
        return ClientSession()

    def get_json(self, path):
        async def fetch():
            async with self.session.get(self.base + path) as resp:
                resp.raise_for_status()
                return await resp.json()
        return goloop.await_(fetch())

    def close(self):
        goloop.await_(self.session.close())


def legacy_report(client, ids):
    """Synchronous business code that calls the SDK once per id."""
    return [client.get_json(f"/item/{i}")["double"] for i in ids]


def test_blocking_facade_over_aiohttp_inside_async_handlers():
    async def upstream_item(request):
        await asyncio.sleep(SLOW)
        i = int(request.match_info["i"])
        return web.json_response({"double": 2 * i})

    async def main():
        upstream = web.Application()
        upstream.router.add_get("/item/{i}", upstream_item)
        up_runner = web.AppRunner(upstream)
        await up_runner.setup()
        up_site = web.TCPSite(up_runner, "127.0.0.1", 0)
        await up_site.start()
        base = f"http://127.0.0.1:{up_runner.addresses[0][1]}"

        async def report(request):
            client = BlockingHTTP(base)
            try:
                ids = [int(x) for x in request.query["ids"].split(",")]
                return web.json_response(legacy_report(client, ids))
            finally:
                client.close()

        front = web.Application()
        front.router.add_get("/report", report)
        runner = web.AppRunner(front)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/report"
        try:
            async with ClientSession() as session:
                async def one(k):
                    async with session.get(url, params={"ids": f"{k},{k + 1}"}) as resp:
                        return await resp.json()

                t0 = time.monotonic()
                results = await asyncio.gather(*(one(k) for k in range(20)))
                took = time.monotonic() - t0
        finally:
            await runner.cleanup()
            await up_runner.cleanup()
        return results, took

    results, took = run_bounded(GOLOOP, main)
    assert results == [[2 * k, 2 * (k + 1)] for k in range(20)]
    # 20 reports of 2 sequential upstream calls: 8 s one at a time; the
    # handlers waiting in await_() let the others run (about 0.4 s).
    assert took < 20 * 2 * SLOW / 2, took


def test_sync_orm_hook_needing_an_async_lookup():
    pytest.importorskip("sqlalchemy")
    from sqlalchemy import Column, Integer, String, create_engine, event
    from sqlalchemy.orm import Session, declarative_base

    Base = declarative_base()

    class Item(Base):
        __tablename__ = "items"
        id = Column(Integer, primary_key=True)
        name = Column(String)
        price = Column(Integer)

    async def price_service(name):
        await asyncio.sleep(0.01)
        return len(name) * 100

    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)

    @event.listens_for(Session, "before_flush")
    def fill_prices(session, flush_context, instances):
        # A synchronous ORM hook: the price comes from an async service.
        for obj in session.new:
            if isinstance(obj, Item) and obj.price is None:
                obj.price = goloop.await_(price_service(obj.name))

    async def main():
        ticks = []

        async def ticker():
            while True:
                ticks.append(1)
                await asyncio.sleep(0.001)

        t = asyncio.create_task(ticker())
        with Session(engine) as session:
            session.add_all([Item(name="pen"), Item(name="laptop")])
            session.commit()
            rows = sorted((i.name, i.price) for i in session.query(Item))
        t.cancel()
        return rows, len(ticks)

    try:
        rows, ticks = run_bounded(GOLOOP, main)
    finally:
        event.remove(Session, "before_flush", fill_prices)
        engine.dispose()
    assert rows == [("laptop", 600), ("pen", 300)]
    assert ticks >= 2   # the loop ran the ticker while the hook waited
