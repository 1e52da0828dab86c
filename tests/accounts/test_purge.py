"""The periodic purge of expired sessions and ended sign-in throttle windows, on SQLite and
PostgreSQL: what it deletes, what it keeps, several replicas at once, the background task."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy import func, select

from relaygate.accounts.purge import PeriodicPurge, purge_once
from relaygate.accounts.sessions import sign_in, verify_session
from relaygate.accounts.users import create_user
from relaygate.app import Gateway
from relaygate.settings import Settings
from relaygate.store import identity_sql
from relaygate.store.schema import sessions, sign_in_throttle
from relaygate.store.sql import SqlStore
from tests.accounts.identity_support import FAST, PASSWORD, backend, make_account, store

__all__ = ["backend", "store"]

EMAIL = "purge@acme.test"


async def _subjects(store: SqlStore) -> set[str]:
    async with store.engine.begin() as conn:
        return {row[0] for row in await conn.execute(select(sign_in_throttle.c.subject))}


async def _count(store: SqlStore, table: object) -> int:
    async with store.engine.begin() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def _populate(store: SqlStore, now: int) -> str:
    """Two expired sessions (idled out; past its absolute end) and a live one, each of its own
    user (a sign-in ends its own user's expired sessions); an ended throttle window and a
    current one. Returns the live session's cookie."""
    account = await make_account(store)
    idle, life = FAST.session_idle_seconds, FAST.session_lifetime_seconds
    cookies = []
    for n, at in enumerate((now - idle - 5, now - life - 5, now)):
        email = f"{n}-{EMAIL}"
        # created at ``at`` too: a password changed after a session began ends it
        await create_user(store, email, PASSWORD, "member", account, settings=FAST, now=at)
        cookies.append((await sign_in(store, FAST, email, PASSWORD, None, now=at))[1])
    await identity_sql.charge_attempts(store, ["address:b"], now, FAST.sign_in_window_seconds)
    async with store.engine.begin() as conn:  # charge_attempts drops ended windows itself
        await conn.execute(sign_in_throttle.insert().values(
            subject="email:old", window_start=now - 2 * FAST.sign_in_window_seconds, failures=3))
    return cookies[-1]


async def test_a_pass_deletes_what_ended_and_keeps_what_lives(store: SqlStore) -> None:
    now = int(time.time())
    live = await _populate(store, now)
    assert await _count(store, sessions) == 3
    assert {"address:b", "email:old"} <= await _subjects(store)
    purged = await purge_once(store, FAST, now=now)
    assert (purged.sessions, purged.throttle_rows) == (2, 1)
    assert await _count(store, sessions) == 1
    held = await _subjects(store)  # the sign-ins' own current counts stay too
    assert "address:b" in held
    assert "email:old" not in held
    assert await verify_session(store, live, None, now=now + 1) is not None
    assert await purge_once(store, FAST, now=now) == type(purged)(0, 0)


async def test_replicas_purging_at_once_delete_each_row_once(store: SqlStore) -> None:
    now = int(time.time())
    await _populate(store, now)
    async with store.engine.begin() as conn:
        await conn.execute(sign_in_throttle.insert(), [
            {"subject": f"email:old{i}", "window_start": i, "failures": 1} for i in range(1, 6)])
    results = await asyncio.gather(*(purge_once(store, FAST, now=now) for _ in range(4)))
    assert sum(r.sessions for r in results) == 2
    assert sum(r.throttle_rows for r in results) == 6
    assert await _count(store, sessions) == 1
    held = await _subjects(store)
    assert "address:b" in held
    assert not {s for s in held if s.startswith("email:old")}


async def test_the_background_task_purges_at_start_and_stops(store: SqlStore) -> None:
    now = int(time.time())
    await _populate(store, now)
    task = PeriodicPurge(store, FAST)
    task.start()
    try:
        await asyncio.wait_for(task.passed.wait(), 30)
    finally:
        await task.close()
    assert task.passes >= 1
    assert await _count(store, sessions) == 1
    passes = task.passes
    await task.close()  # closing twice is harmless, and no pass runs after it
    assert task.passes == passes


def test_every_worker_runs_the_purge(tmp_path: Path) -> None:
    gateway = Gateway(Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}"))
    assert isinstance(gateway.purge, PeriodicPurge)
    assert gateway.purge.settings.purge_interval_seconds == 600
