"""Console users: an email, an argon2id password hash, and a role.

``admin`` is the operator (every account, no ``account_id``); ``member`` owns exactly one
account. Emails are normalised (:func:`normalise_email`) and unique. Passwords follow
:func:`relaygate.accounts.passwords.check_password` and are stored only as argon2id hashes.
Disabling a user or changing their password ends their sessions in the same transaction.

Callers audit (``accounts.audit.record``) after each change succeeds: these functions return
what changed and raise :mod:`relaygate.errors` otherwise.
"""

from __future__ import annotations

import secrets
import time
import unicodedata
from typing import get_args

from relaygate.accounts.passwords import check_password, hash_password
from relaygate.accounts.principal import Role
from relaygate.errors import InvalidRequest, NotFound
from relaygate.settings import Settings
from relaygate.store import identity_sql
from relaygate.store.identity_sql import DuplicateEmail, UserRecord
from relaygate.store.sql import SqlStore

MAX_EMAIL_CHARS = 254
"""The longest email (RFC 5321's path limit, less its angle brackets)."""
_MAX_LOCAL_CHARS = 64
ROLES: tuple[str, ...] = get_args(Role)


def new_user_id() -> str:
    return "usr_" + secrets.token_hex(8)


def normalise_email(email: object) -> str:
    """``email`` trimmed, NFC-normalised and lower-cased, or :class:`InvalidRequest`.

    The length is checked before any other work, so an oversized value costs nothing. Lower
    case for the whole address: mail systems treat the local part case-insensitively in
    practice, and two accounts differing only in case would be a trap."""
    if not isinstance(email, str):
        raise InvalidRequest("email: must be a string", param="email")
    if len(email) > MAX_EMAIL_CHARS + 16:  # room for surrounding spaces, no more
        raise InvalidRequest(f"email: at most {MAX_EMAIL_CHARS} characters", param="email")
    text = unicodedata.normalize("NFC", email.strip()).lower()
    local, _, domain = text.rpartition("@")
    if (
        len(text) > MAX_EMAIL_CHARS
        or text.count("@") != 1
        or not local
        or len(local) > _MAX_LOCAL_CHARS
        or not domain
        or domain.startswith(".")
        or domain.endswith(".")
        or any(c.isspace() or unicodedata.category(c) == "Cc" for c in text)
    ):
        raise InvalidRequest(
            f"email: not a valid email address (at most {MAX_EMAIL_CHARS} characters)",
            param="email",
        )
    return text


def _now(now: int | None) -> int:
    return int(time.time()) if now is None else now


async def _check_role(store: SqlStore, role: str, account_id: str | None) -> None:
    if role not in ROLES:
        raise InvalidRequest(f"role: must be one of {', '.join(ROLES)}", param="role")
    if role == "admin" and account_id is not None:
        raise InvalidRequest(
            "account_id: an admin sees every account and belongs to none", param="account_id"
        )
    if role == "member":
        if account_id is None:
            raise InvalidRequest("account_id: a member belongs to one account", param="account_id")
        if len(account_id) > 40 or not await identity_sql.account_exists(store, account_id):
            raise NotFound("No such account", param="account_id")


async def create_user(
    store: SqlStore,
    email: str,
    password: str,
    role: str,
    account_id: str | None,
    *,
    settings: Settings | None = None,
    now: int | None = None,
) -> UserRecord:
    """Create a user; the password is checked against the policy and stored hashed.

    Raises :class:`InvalidRequest` (bad email, password, role or account pairing, or an email
    that is taken) or :class:`NotFound` (a member's account does not exist)."""
    settings = settings or Settings()
    normalised = normalise_email(email)
    check_password(password, settings)
    await _check_role(store, role, account_id)
    moment = _now(now)
    user = UserRecord(
        id=new_user_id(),
        email=normalised,
        password_hash=await hash_password(password, settings),
        role=role,
        account_id=account_id,
        created_at=moment,
        password_changed_at=moment,
    )
    try:
        return await identity_sql.insert_user(store, user)
    except DuplicateEmail:
        raise InvalidRequest("email: a user with this email exists", param="email") from None


async def list_users(
    store: SqlStore, *, account_id: str | None = None, limit: int = 100, after: str | None = None
) -> list[UserRecord]:
    """Users by id, optionally of one account; ``after`` is the last id of the previous page."""
    return await identity_sql.select_users(
        store, account_id=account_id, limit=max(1, min(limit, 1000)), after=after
    )


async def get_user(store: SqlStore, user_id: str) -> UserRecord:
    user = await identity_sql.user_by_id(store, user_id)
    if user is None:
        raise NotFound("No such user")
    return user


async def disable_user(store: SqlStore, user_id: str, *, now: int | None = None) -> UserRecord:
    """Disable a user: they can no longer sign in, and their sessions end at once."""
    user = await identity_sql.set_disabled(store, user_id, _now(now))
    if user is None:
        raise NotFound("No such user")
    return user


async def set_password(
    store: SqlStore,
    user_id: str,
    password: str,
    *,
    settings: Settings | None = None,
    now: int | None = None,
) -> None:
    """Give a user a new password (checked against the policy) and end all their sessions."""
    settings = settings or Settings()
    check_password(password, settings)
    new_hash = await hash_password(password, settings)
    if not await identity_sql.replace_password_hash(
        store, user_id, new_hash, _now(now), end_sessions=True
    ):
        raise NotFound("No such user")


def user_view(user: UserRecord) -> dict[str, object]:
    """A user as the API and the CLI show it: never the password hash."""
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "account_id": user.account_id,
        "created_at": user.created_at,
        "disabled_at": user.disabled_at,
        "last_sign_in_at": user.last_sign_in_at,
    }
