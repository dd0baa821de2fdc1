"""SQLAlchemy 2's asyncio ORM on asyncpg against a real PostgreSQL server,
among preempted tasks, on goloop and on stock asyncio.

SQLAlchemy runs its ORM (unit of work, loaders, its pool) as synchronous
code in a child greenlet per call and switches back to the task's own
greenlet for every await on the driver, so a task step regularly suspends
with a greenlet alive on its stack and resumes it in a later step.  goloop
keeps such a task on its worker (README, "greenlet"); this test drives that
with real traffic: many concurrent AsyncSessions inserting, selecting
(selectinload) and updating (ORM attributes, UPDATE statements, one row all
of them contend for) while CPU-bound tasks are preempted around them, and
with the sessions' own steps preempted too: between ORM calls and, through
run_sync(), while an ORM call's greenlet waits for the task's greenlet to
compute.  On goloop it checks that preemptions really happened during the
run (and while greenlets were alive); on both loops every row, count and
sum must be exactly right.

tests/preempt/test_greenlet_safety.py runs the same ORM on aiosqlite (a
driver thread per connection) in subprocesses at several slices, with
controls; this is the PostgreSQL one, whose driver is asyncpg on the loop's
own transports.

asyncpg connects with ssl off: its default SSLRequest round swaps protocols
in a way goloop can break (test_asyncpg.py, the strict xfail
test_connect_survives_a_preemption_during_the_protocol_swap).

Tables carry this process's id and a counter (the database is shared with
concurrent runs) and are dropped afterwards.
"""
import asyncio
import itertools
import os
import time

import pytest

import goloop
from apps_helpers import GOLOOP, burn_cpu, run

pytest.importorskip("asyncpg")
pytest.importorskip("greenlet")
sqlalchemy = pytest.importorskip("sqlalchemy")

from sqlalchemy import ForeignKey, func, select, update  # noqa: E402
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine  # noqa: E402
from sqlalchemy.orm import (DeclarativeBase, Mapped, mapped_column,  # noqa: E402
                            relationship, selectinload)

# SQLAlchemy 2.1 renamed await_only to await_ (the old name stays until 2.2).
await_ = getattr(sqlalchemy.util, "await_", None) or sqlalchemy.util.await_only

WORKERS = 12        # concurrent sessions
ROUNDS = 3          # transactions of each kind per worker
ENTRIES = 3         # entries per account
HOGS = 2            # CPU-bound tasks beside them

_serial = itertools.count()


def declare_models(suffix):
    """Fresh declarative models over tables named with `suffix`: Account
    (one per worker and round) with its Entries, and a one-row Counter."""
    class Base(DeclarativeBase):
        pass

    class Account(Base):
        __tablename__ = f"goloop_account_{suffix}"
        id: Mapped[int] = mapped_column(primary_key=True)
        worker: Mapped[int]
        round: Mapped[int]
        balance: Mapped[int] = mapped_column(default=0)
        entries: Mapped[list["Entry"]] = relationship(
            "Entry", back_populates="account", order_by="Entry.id")

    class Entry(Base):
        __tablename__ = f"goloop_entry_{suffix}"
        id: Mapped[int] = mapped_column(primary_key=True)
        account_id: Mapped[int] = mapped_column(ForeignKey(Account.id))
        amount: Mapped[int]
        account: Mapped[Account] = relationship(Account, back_populates="entries")

    class Counter(Base):
        __tablename__ = f"goloop_counter_{suffix}"
        id: Mapped[int] = mapped_column(primary_key=True)
        n: Mapped[int]

    return Base, Account, Entry, Counter


def amounts(worker, rnd):
    """The entry amounts of `worker`'s account of round `rnd`."""
    return [worker * 1000 + rnd * 10 + k for k in range(ENTRIES)]


def asyncpg_url(dsn):
    """`dsn` (postgresql://...) as SQLAlchemy's asyncpg URL."""
    return "postgresql+asyncpg://" + dsn.split("://", 1)[1]


def preemptions_so_far():
    """goloop's process-wide count of preempted steps (0 on stock asyncio)."""
    return goloop.stats()["preemptions"]


async def compute_in_task_greenlet(seconds):
    """Burn the CPU in the task's own greenlet while the ORM call's child
    greenlet waits in await_() for it; whether a preemption happened
    meanwhile (only one step runs at a time, so the count grows only if
    this step was parked, or another one was while it was)."""
    before = preemptions_so_far()
    burn_cpu(seconds)
    return preemptions_so_far() > before


async def orm_workload(dsn):
    """WORKERS sessions' transactions beside HOGS CPU-bound tasks; what the
    database holds afterwards and what the run observed."""
    Base, Account, Entry, Counter = declare_models(f"{os.getpid()}_{next(_serial)}")
    engine = create_async_engine(asyncpg_url(dsn), pool_size=5, max_overflow=5,
                                 connect_args={"ssl": False})
    sessions = async_sessionmaker(engine, expire_on_commit=False)

    def audit(sync_session, worker):
        """Runs in a child greenlet (run_sync): two ORM queries with the
        task's greenlet computing in between."""
        count = sync_session.scalar(
            select(func.count()).select_from(Account).where(Account.worker == worker))
        preempted = await_(compute_in_task_greenlet(0.005))
        total = sync_session.scalar(
            select(func.coalesce(func.sum(Entry.amount), 0))
            .join(Entry.account).where(Account.worker == worker))
        return count, total, preempted

    async def worker(w):
        audits = []
        for rnd in range(ROUNDS):
            async with sessions() as s, s.begin():
                s.add(Account(worker=w, round=rnd,
                              entries=[Entry(amount=a) for a in amounts(w, rnd)]))
                burn_cpu(0.003)      # preempted inside the transaction
            async with sessions() as s, s.begin():
                account = await s.scalar(
                    select(Account).options(selectinload(Account.entries))
                    .where(Account.worker == w, Account.round == rnd))
                account.balance = sum(e.amount for e in account.entries)
                await s.execute(update(Counter).where(Counter.id == 1)
                                .values(n=Counter.n + 1))
            async with sessions() as s:
                audits.append(await s.run_sync(audit, w))
        return audits

    async def hog(done):
        while not done.is_set():
            # Past the 1 ms slice, so goloop preempts every chunk; short, as
            # stock asyncio runs every chunk of both hogs between two steps
            # of each session.
            burn_cpu(0.0025)
            await asyncio.sleep(0)

    async def watch_pinned(done, seen):
        while not done.is_set():
            seen.append(goloop.stats()["step_workers_pinned"])
            await asyncio.sleep(0.002)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        async with sessions() as s, s.begin():
            s.add(Counter(id=1, n=0))

        done, pinned = asyncio.Event(), []
        hogs = [asyncio.create_task(hog(done)) for _ in range(HOGS)]
        watcher = asyncio.create_task(watch_pinned(done, pinned))
        preemptions_before = preemptions_so_far()
        try:
            audits = await asyncio.gather(*(worker(w) for w in range(WORKERS)))
        finally:
            done.set()
            await asyncio.gather(*hogs, watcher)
        preemptions = preemptions_so_far() - preemptions_before

        async with sessions() as s:
            accounts = (await s.scalars(
                select(Account).options(selectinload(Account.entries))
                .order_by(Account.worker, Account.round))).all()
            stored = [(a.worker, a.round, a.balance, [e.amount for e in a.entries],
                       {e.account is a for e in a.entries}) for a in accounts]
            counter = await s.scalar(select(Counter.n))
            entry_count = await s.scalar(select(func.count()).select_from(Entry))
        return dict(stored=stored, counter=counter, entry_count=entry_count,
                    audits=audits, preemptions=preemptions, max_pinned=max(pinned, default=0))
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
        await engine.dispose()


def test_orm_sessions_among_preempted_tasks(loop_kind, postgres_dsn):
    """Concurrent AsyncSessions inserting, loading with selectinload,
    updating and querying through run_sync, beside CPU hogs: every row and
    aggregate is exact; on goloop, steps were preempted throughout (also
    while an ORM call's greenlet was alive) and tasks kept their workers for
    their live greenlets."""
    started = time.monotonic()
    out = run(loop_kind, orm_workload, postgres_dsn)
    elapsed = time.monotonic() - started

    expected = [(w, rnd, sum(amounts(w, rnd)), amounts(w, rnd), {True})
                for w in range(WORKERS) for rnd in range(ROUNDS)]
    assert out["stored"] == expected
    assert out["counter"] == WORKERS * ROUNDS
    assert out["entry_count"] == WORKERS * ROUNDS * ENTRIES
    for w, audits in enumerate(out["audits"]):
        # A worker's rounds run in order: its audit after round r sees the
        # r + 1 accounts it made so far and all their entries.
        assert [(count, total) for count, total, _ in audits] == [
            (rnd + 1, sum(sum(amounts(w, r)) for r in range(rnd + 1)))
            for rnd in range(ROUNDS)], w

    if loop_kind == GOLOOP:
        preempted_audits = sum(p for audits in out["audits"] for *_, p in audits)
        # Hogs computing in 2.5 ms steps for the whole run at a 1 ms slice,
        # and 3 ms / 5 ms computations inside every session: many
        # preemptions, not a stray one.
        assert out["preemptions"] >= 100, out["preemptions"]
        # The 5 ms computation with an ORM greenlet alive was preempted (or
        # ran while another step was) in most audits (all, in practice).
        assert preempted_audits >= WORKERS * ROUNDS // 2, preempted_audits
        assert out["max_pinned"] >= 1, out["max_pinned"]
    print(f"{loop_kind}: {elapsed:.1f} s, {out['preemptions']} preemptions, "
          f"at most {out['max_pinned']} workers pinned")
