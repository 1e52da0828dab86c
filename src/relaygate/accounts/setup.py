"""The console's first run: while no admin user exists, ``relaygate serve`` makes a one-time
setup link; whoever opens it first (within :data:`SETUP_SECONDS`) creates the first admin.

The link's token is 256 random bits, stored only as its SHA-256 (compared by the database on
the hash, which reveals nothing about the token); each start of ``serve`` replaces it, and it
works once: using it and creating the admin never succeed twice, even on several replicas.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from relaygate.accounts import users
from relaygate.accounts.passwords import check_password
from relaygate.errors import InvalidRequest, NotFound
from relaygate.settings import Settings
from relaygate.store import identity_sql, setup_sql
from relaygate.store.identity_sql import UserRecord
from relaygate.store.sql import SqlStore

SETUP_SECONDS = 3600
"""How long a setup link works after ``relaygate serve`` printed it."""
LINK_GONE = "This setup link is not valid: it was used, it expired, or an admin exists already"
_TOKEN_CHARS = 43


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _checked(token: str) -> str:
    if not isinstance(token, str) or len(token) != _TOKEN_CHARS or not token.isascii():
        raise NotFound(LINK_GONE)
    return _hash(token)


async def open_setup(store: SqlStore, *, now: int | None = None) -> str | None:
    """A new setup token when no admin exists (else ``None``); any earlier link stops working."""
    if await setup_sql.admin_exists(store):
        return None
    moment = int(time.time()) if now is None else now
    token = secrets.token_urlsafe(32)
    await setup_sql.replace_link(store, _hash(token), moment, moment + SETUP_SECONDS)
    return token


async def link_is_live(store: SqlStore, token: str, *, now: int | None = None) -> bool:
    try:
        token_hash = _checked(token)
    except NotFound:
        return False
    moment = int(time.time()) if now is None else now
    return await setup_sql.link_is_live(store, token_hash, moment)


async def complete_setup(
    store: SqlStore, settings: Settings, token: str, email: str, password: str
) -> UserRecord:
    """Create the first admin through the link (which then never works again).

    The email and password are checked before the link is used, so a typo does not spend it.
    Raises :class:`NotFound` for a link that is not live, :class:`InvalidRequest` for a bad
    email or password."""
    token_hash = _checked(token)
    normalised = users.normalise_email(email)
    check_password(password, settings)
    if await identity_sql.user_by_email(store, normalised) is not None:
        raise InvalidRequest("email: a user with this email exists", param="email")
    used_at = int(time.time())
    if not await setup_sql.use_link(store, token_hash, used_at):
        raise NotFound(LINK_GONE)
    try:
        return await users.create_user(
            store, normalised, password, "admin", None, settings=settings
        )
    except BaseException:
        # no admin was made (the email was taken meanwhile, the store failed): the link works
        # again rather than leaving the operator with neither an admin nor a link
        await setup_sql.release_link(store, token_hash, used_at)
        raise
