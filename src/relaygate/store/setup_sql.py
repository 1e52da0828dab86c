"""The SQL of the console's first-run setup link (one row, id 1, in ``console_setup``)."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, delete, select, update

from relaygate.store.schema import console_setup, users
from relaygate.store.sql import SqlStore

_ROW = 1


async def admin_exists(store: SqlStore) -> bool:
    """Whether any admin user exists (disabled ones count: the operator has been here)."""
    async with store.engine.begin() as conn:
        found = await conn.execute(select(users.c.id).where(users.c.role == "admin").limit(1))
        return found.first() is not None


async def replace_link(store: SqlStore, token_hash: str, now: int, expires_at: int) -> None:
    """Make ``token_hash`` the one live setup link (an earlier one stops working)."""
    async with store.engine.begin() as conn:
        await conn.execute(delete(console_setup))
        await conn.execute(
            console_setup.insert().values(
                id=_ROW, token_hash=token_hash, created_at=now, expires_at=expires_at
            )
        )


def _live(token_hash: str, now: int) -> ColumnElement[bool]:
    return and_(
        console_setup.c.id == _ROW,
        console_setup.c.token_hash == token_hash,
        console_setup.c.used_at.is_(None),
        console_setup.c.expires_at > now,
    )


async def release_link(store: SqlStore, token_hash: str, used_at: int) -> None:
    """Make a link used at ``used_at`` live again (its admin could not be created), unless an
    admin exists by now or another link replaced it."""
    async with store.engine.begin() as conn:
        admin = await conn.execute(select(users.c.id).where(users.c.role == "admin").limit(1))
        if admin.first() is not None:
            return
        await conn.execute(
            update(console_setup)
            .where(
                console_setup.c.id == _ROW,
                console_setup.c.token_hash == token_hash,
                console_setup.c.used_at == used_at,
            )
            .values(used_at=None)
        )


async def link_is_live(store: SqlStore, token_hash: str, now: int) -> bool:
    async with store.engine.begin() as conn:
        found = await conn.execute(select(console_setup.c.id).where(_live(token_hash, now)))
        return found.first() is not None


async def use_link(store: SqlStore, token_hash: str, now: int) -> bool:
    """Mark the link used, in one statement: of concurrent uses exactly one gets ``True``,
    and none does once an admin exists."""
    async with store.engine.begin() as conn:
        admin = await conn.execute(select(users.c.id).where(users.c.role == "admin").limit(1))
        if admin.first() is not None:
            return False
        result = await conn.execute(
            update(console_setup).where(_live(token_hash, now)).values(used_at=now)
        )
        return result.rowcount == 1
