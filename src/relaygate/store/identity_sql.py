"""The SQL of people and sign-in: users, their sessions and the sign-in throttle.

Each function takes the :class:`~relaygate.store.sql.SqlStore` and runs one transaction
(``BEGIN IMMEDIATE`` on SQLite), but for the lookups every admin request makes (a session and
its user), which are plain reads (:mod:`relaygate.store.reads`) that never take the write lock.
Decisions that must hold across processes are single statements: the throttle is one upsert
that returns the new count, a session's idle expiry moves forward only while it has not passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, and_, case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from relaygate.store.reads import read_first
from relaygate.store.schema import accounts, sessions, sign_in_throttle, users
from relaygate.store.sql import SqlStore

MAX_SESSIONS_PER_USER = 20
"""Sessions one user may hold; a new sign-in ends the oldest beyond this."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A console user as stored (the password only as its argon2id hash)."""

    id: str
    email: str
    password_hash: str
    role: str
    """``admin`` or ``member``."""
    account_id: str | None
    created_at: int
    """Unix seconds, like every time here."""
    password_changed_at: int
    disabled_at: int | None = None
    last_sign_in_at: int | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A console session as stored (its secret only as a SHA-256 hash)."""

    id: str
    secret_hash: str
    user_id: str
    created_at: int
    expires_at: int
    """The absolute end."""
    idle_expires_at: int
    """The idle end, moved forward by ``idle_seconds`` as the session is used."""
    idle_seconds: int
    last_seen_at: int
    address: str | None = None


class DuplicateEmail(Exception):
    """Another user has this email."""


def _user(row: Row[Any]) -> UserRecord:
    return UserRecord(**dict(row._mapping))


def _session(row: Row[Any]) -> SessionRecord:
    return SessionRecord(**dict(row._mapping))


# --- users ---------------------------------------------------------------------------------


async def account_exists(store: SqlStore, account_id: str) -> bool:
    async with store.engine.begin() as conn:
        found = await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id))
        return found.first() is not None


async def insert_user(store: SqlStore, user: UserRecord) -> UserRecord:
    """Insert ``user``; :class:`DuplicateEmail` when its email is taken."""
    values = {
        "id": user.id,
        "email": user.email,
        "password_hash": user.password_hash,
        "role": user.role,
        "account_id": user.account_id,
        "created_at": user.created_at,
        "password_changed_at": user.password_changed_at,
        "disabled_at": user.disabled_at,
        "last_sign_in_at": user.last_sign_in_at,
    }
    try:
        async with store.engine.begin() as conn:
            await conn.execute(users.insert().values(**values))
    except IntegrityError:
        raise DuplicateEmail(user.email) from None
    return user


async def user_by_email(store: SqlStore, email: str) -> UserRecord | None:
    async with store.engine.begin() as conn:
        row = (await conn.execute(select(users).where(users.c.email == email))).first()
    return _user(row) if row else None


async def user_by_id(store: SqlStore, user_id: str) -> UserRecord | None:
    row = await read_first(store, select(users).where(users.c.id == user_id))
    if row is None:
        return None
    return UserRecord(**{c.name: v for c, v in zip(users.columns, row, strict=True)})


async def select_users(
    store: SqlStore, *, account_id: str | None = None, limit: int = 100, after: str | None = None
) -> list[UserRecord]:
    """Users ordered by id (``after``: the last id of the previous page)."""
    query = select(users).order_by(users.c.id).limit(limit)
    if account_id is not None:
        query = query.where(users.c.account_id == account_id)
    if after is not None:
        query = query.where(users.c.id > after)
    async with store.engine.begin() as conn:
        return [_user(row) for row in await conn.execute(query)]


async def set_disabled(store: SqlStore, user_id: str, now: int) -> UserRecord | None:
    """Disable a user (kept as first disabled) and end every session of theirs, atomically."""
    async with store.engine.begin() as conn:
        await conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(disabled_at=func.coalesce(users.c.disabled_at, now))
        )
        await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
        row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
    return _user(row) if row else None


async def replace_password_hash(
    store: SqlStore,
    user_id: str,
    password_hash: str,
    now: int,
    *,
    end_sessions: bool,
    expected_hash: str | None = None,
) -> bool:
    """Store a new hash; with ``end_sessions`` end every session of the user in the same
    transaction. With ``expected_hash`` only if the stored hash is still that one (a re-hash at
    sign-in must not undo a password change made meanwhile). Whether a row changed."""
    condition = users.c.id == user_id
    if expected_hash is not None:
        condition = and_(condition, users.c.password_hash == expected_hash)
    values: dict[str, Any] = {"password_hash": password_hash}
    if end_sessions:
        values["password_changed_at"] = now
    async with store.engine.begin() as conn:
        result = await conn.execute(update(users).where(condition).values(**values))
        if result.rowcount and end_sessions:
            await conn.execute(delete(sessions).where(sessions.c.user_id == user_id))
        return bool(result.rowcount)


# --- sessions ------------------------------------------------------------------------------


async def insert_session(store: SqlStore, session: SessionRecord) -> None:
    """Store a new session, note the sign-in on its user, drop the user's expired sessions
    and those beyond :data:`MAX_SESSIONS_PER_USER` (oldest first)."""
    now = session.created_at
    c = sessions.c
    async with store.engine.begin() as conn:
        await conn.execute(
            delete(sessions).where(
                c.user_id == session.user_id, or_(c.expires_at <= now, c.idle_expires_at <= now)
            )
        )
        await conn.execute(
            sessions.insert().values(
                id=session.id,
                secret_hash=session.secret_hash,
                user_id=session.user_id,
                created_at=session.created_at,
                expires_at=session.expires_at,
                idle_expires_at=session.idle_expires_at,
                idle_seconds=session.idle_seconds,
                last_seen_at=session.last_seen_at,
                address=session.address,
            )
        )
        keep = (
            select(c.id)
            .where(c.user_id == session.user_id)
            .order_by(c.created_at.desc(), c.id.desc())
            .limit(MAX_SESSIONS_PER_USER)
        )
        kept = [row[0] for row in await conn.execute(keep)]
        await conn.execute(delete(sessions).where(c.user_id == session.user_id, c.id.not_in(kept)))
        await conn.execute(
            update(users).where(users.c.id == session.user_id).values(last_sign_in_at=now)
        )


async def session_and_user(
    store: SqlStore, session_id: str
) -> tuple[SessionRecord, UserRecord] | None:
    """The session ``session_id`` and its user (whatever their state: the caller decides)."""
    query = select(sessions, users).join(users, users.c.id == sessions.c.user_id)
    query = query.where(sessions.c.id == session_id)
    row = await read_first(store, query)  # every admin request: never the write lock
    if row is None:
        return None
    values = list(row)
    width = len(sessions.columns)  # the session's columns come first, then the user's
    session = {c.name: v for c, v in zip(sessions.columns, values[:width], strict=True)}
    user = {c.name: v for c, v in zip(users.columns, values[width:], strict=True)}
    return SessionRecord(**session), UserRecord(**user)


async def touch_session(store: SqlStore, session_id: str, now: int) -> bool:
    """Move the session's idle end to ``now + idle_seconds`` (never past its absolute end),
    only while it is still live. Whether it was."""
    c = sessions.c
    async with store.engine.begin() as conn:
        result = await conn.execute(
            update(sessions)
            .where(c.id == session_id, c.expires_at > now, c.idle_expires_at > now)
            .values(
                last_seen_at=now,
                idle_expires_at=case(
                    (now + c.idle_seconds < c.expires_at, now + c.idle_seconds),
                    else_=c.expires_at,
                ),
            )
        )
        return bool(result.rowcount)


async def delete_session(store: SqlStore, session_id: str) -> bool:
    async with store.engine.begin() as conn:
        result = await conn.execute(delete(sessions).where(sessions.c.id == session_id))
        return bool(result.rowcount)


async def user_sessions(store: SqlStore, user_id: str) -> list[SessionRecord]:
    query = select(sessions).where(sessions.c.user_id == user_id).order_by(sessions.c.created_at)
    async with store.engine.begin() as conn:
        return [_session(row) for row in await conn.execute(query)]


async def purge_sessions(store: SqlStore, now: int) -> int:
    """Delete every expired session (absolute or idle); how many."""
    c = sessions.c
    async with store.engine.begin() as conn:
        result = await conn.execute(
            delete(sessions).where(or_(c.expires_at <= now, c.idle_expires_at <= now))
        )
        return int(result.rowcount)


# --- the sign-in throttle ------------------------------------------------------------------


def _upsert(dialect: str) -> Any:
    return (
        pg_insert(sign_in_throttle) if dialect == "postgresql" else sqlite_insert(sign_in_throttle)
    )


async def charge_attempts(
    store: SqlStore, subjects: list[str], now: int, window: int
) -> list[tuple[int, int]]:
    """Count one attempt against each subject, atomically: a subject whose window has ended
    starts a new one (and ended windows are deleted). Returns ``(failures, window_start)`` per
    subject, counting this one.

    One upsert per subject (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``): concurrent
    attempts from any number of processes each see a distinct count."""
    t = sign_in_throttle.c
    counts: list[tuple[int, int]] = []
    async with store.engine.begin() as conn:
        # Counts of ended windows are dropped as attempts come (an index range on window_start).
        await conn.execute(delete(sign_in_throttle).where(t.window_start <= now - window))
        for subject in subjects:
            insert = _upsert(store.dialect).values(subject=subject, window_start=now, failures=1)
            expired = t.window_start <= now - window
            statement = insert.on_conflict_do_update(
                index_elements=[t.subject],
                set_={
                    "failures": case((expired, 1), else_=t.failures + 1),
                    "window_start": case((expired, now), else_=t.window_start),
                },
            ).returning(t.failures, t.window_start)
            failures, start = (await conn.execute(statement)).one()
            counts.append((int(failures), int(start)))
    return counts


async def refund_attempt(store: SqlStore, subject: str) -> None:
    """Take back one attempt from ``subject`` (a sign-in that succeeded)."""
    t = sign_in_throttle.c
    async with store.engine.begin() as conn:
        await conn.execute(
            update(sign_in_throttle)
            .where(t.subject == subject, t.failures > 0)
            .values(failures=t.failures - 1)
        )


async def clear_attempts(store: SqlStore, subject: str) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(delete(sign_in_throttle).where(sign_in_throttle.c.subject == subject))


async def purge_attempts(store: SqlStore, now: int, window: int) -> int:
    """Delete the counts whose window has ended; how many."""
    async with store.engine.begin() as conn:
        result = await conn.execute(
            delete(sign_in_throttle).where(sign_in_throttle.c.window_start <= now - window)
        )
        return int(result.rowcount)
