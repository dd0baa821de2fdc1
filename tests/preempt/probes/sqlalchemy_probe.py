"""Probe: SQLAlchemy 2's asyncio ORM on aiosqlite among preempted tasks.

    python sqlalchemy_probe.py DIR TIME_SLICE [--unsafe]

PROBE_TASKS tasks (default 12) each run TXNS (5) AsyncSession transactions against a
database file of their own in DIR (no SQLite lock contention: what is
tested is goloop, not SQLite's busy handler), each inserting a row and
computing ~2 ms inside the transaction, then count their rows, while two
tasks compute in 50 ms steps and get preempted.  SQLAlchemy runs ORM code
in a child greenlet that switches back to the task's step for every await,
and configures its mappers on first use under a module-level RLock, which
all tasks reach at once.  Every row and every count must be right.
Prints one JSON line.
"""
import asyncio
import json
import os
import sys

from sqlalchemy import ForeignKey, Integer, String, func, select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

import goloop
from probe_common import burn, start

DIR, SLICE = sys.argv[1], float(sys.argv[2])
TASKS, TXNS = int(os.environ.get("PROBE_TASKS", 12)), 5
start(90, greenlets=True, libraries=True)


class Base(DeclarativeBase):
    pass


class Owner(Base):
    __tablename__ = "owners"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rows: Mapped[list["Row"]] = relationship(back_populates="owner")


class Row(Base):
    __tablename__ = "rows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(Integer, ForeignKey("owners.id"))
    seq: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(String(50))
    owner: Mapped[Owner] = relationship(back_populates="rows")


async def hog(stop):
    while not stop.is_set():
        burn(0.05)
        await asyncio.sleep(0)


async def worker(w):
    engine = create_async_engine(f"sqlite+aiosqlite:///{DIR}/db{w}.sqlite",
                                 connect_args={"timeout": 60})
    try:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with sessions() as s, s.begin():
            s.add(Owner(id=w))
        counts = []
        for i in range(TXNS):
            async with sessions() as s, s.begin():
                s.add(Row(owner_id=w, seq=i, note=f"task {w} row {i}"))
                burn(0.002)
            async with sessions() as s:
                counts.append(await s.scalar(select(func.count()).select_from(Row)))
        async with sessions() as s:
            rows = (await s.execute(select(Row.owner_id, Row.seq, Row.note))).all()
        return counts, sorted(rows)
    finally:
        await engine.dispose()


async def main():
    stop = asyncio.Event()
    hogs = [asyncio.create_task(hog(stop)) for _ in range(2)]
    try:
        return await asyncio.gather(*(worker(w) for w in range(TASKS)))
    finally:
        stop.set()
        await asyncio.gather(*hogs)


before = goloop.stats()["preemptions"]
results = goloop.run(main(), time_slice=SLICE)
expected = [(list(range(1, TXNS + 1)), [(w, i, f"task {w} row {i}") for i in range(TXNS)])
            for w in range(TASKS)]
print(json.dumps({"correct": [(c, [tuple(r) for r in rows]) for c, rows in results] == expected,
                  "preemptions": goloop.stats()["preemptions"] - before}))
