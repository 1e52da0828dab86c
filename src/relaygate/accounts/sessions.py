"""Console sessions: signing in and out, verifying the cookie, and the CSRF check.

The cookie holds ``<session id>.<secret>``: a public id (``ses_`` and 96 random bits; audit rows
name it) and a 256-bit secret. The store keeps only the secret's SHA-256, found by the id and
compared with :func:`hmac.compare_digest`, so neither a database dump nor a timing probe
yields a usable cookie.

The CSRF token is derived, not stored: HMAC-SHA256 keyed by the session's secret over its id.
Any request that carries the cookie can recompute it (a server-rendered form, a JSON client
after sign-in), it needs no server secret to configure, rotate and share between replicas,
it dies with its session, and neither the database nor a leaked token reveals the cookie (HMAC
is one-way in its key). A cross-site page can make the browser send the cookie, but it can
neither read the cookie nor the token, which is what the check requires.

A session ends at the first of: its absolute end (``session_lifetime_seconds`` after sign-in),
its idle end (``session_idle_seconds`` after it was last used, noted at most once a minute),
sign-out, its user being disabled or given a new password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import time

from relaygate.accounts import throttle
from relaygate.accounts.passwords import (
    dummy_hash,
    hash_password,
    password_too_long,
    verify_password,
)
from relaygate.accounts.principal import Principal, Role
from relaygate.accounts.users import normalise_email
from relaygate.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from relaygate.settings import Settings
from relaygate.store import identity_sql
from relaygate.store.identity_sql import SessionRecord, UserRecord
from relaygate.store.sql import SqlStore

log = logging.getLogger("relaygate.accounts")

Session = SessionRecord
"""A session as stored (its secret only hashed): what :func:`sign_in` returns with the cookie."""

SIGN_IN_FAILED = "Wrong email or password"
"""The one message of a failed sign-in: unknown email, wrong password and disabled user alike."""
CSRF_FAILED = "Missing or wrong CSRF token (send the session's token in X-CSRF-Token)"
MAX_COOKIE_CHARS = 128
"""A session cookie value is 72 characters; anything longer is not one (and is not parsed)."""
TOUCH_SECONDS = 60
"""A session's last use is written at most this often (a write per request would be waste);
its idle end may so come up to this much early."""

_COOKIE = re.compile(r"(ses_[0-9a-f]{24})\.([A-Za-z0-9_-]{43})")
_CSRF_CONTEXT = b"relaygate csrf v1\x00"


def _now(now: int | None) -> int:
    return int(time.time()) if now is None else now


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_cookie_value(cookie_value: str | None) -> tuple[str, str] | None:
    """``(session id, secret)`` from a cookie value, or ``None`` when it is not one of ours."""
    if not cookie_value or len(cookie_value) > MAX_COOKIE_CHARS:
        return None
    match = _COOKIE.fullmatch(cookie_value)
    return (match.group(1), match.group(2)) if match else None


def csrf_token(cookie_value: str) -> str:
    """The CSRF token of the session whose cookie is ``cookie_value`` (the same every time)."""
    parsed = parse_cookie_value(cookie_value)
    if parsed is None:
        raise ValueError("not a session cookie")
    session_id, secret = parsed
    mac = hmac.new(secret.encode(), _CSRF_CONTEXT + session_id.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


async def sign_in(
    store: SqlStore,
    settings: Settings,
    email: str,
    password: str,
    address: str | None,
    *,
    now: int | None = None,
) -> tuple[Session, str]:
    """Check an email and password and open a session: ``(session, cookie value)``; the
    cookie value is shown once (set it with :func:`relaygate.admin.cookies.session_cookie`).

    Raises :class:`InvalidRequest` for input no password could match (oversized, not a string;
    checked before any hashing), :class:`RateLimited` when the address or email is throttled,
    and :class:`AuthenticationFailed` with one message for an unknown email, a wrong password
    and a disabled user. An unknown email is checked against a dummy hash, so that it costs
    what a known one costs."""
    if not isinstance(password, str) or password_too_long(password):
        raise InvalidRequest("password: not a possible password", param="password")
    normalised = normalise_email(email)
    moment = _now(now)
    counted = await throttle.attempt(store, settings, normalised, address, moment)
    user = await identity_sql.user_by_email(store, normalised)
    stored = user.password_hash if user is not None else await dummy_hash(settings)
    matches, needs_rehash = await verify_password(stored, password, settings)
    if user is None or not matches or user.disabled:
        log.info("sign-in failed from %s", address or "an unknown address")
        raise AuthenticationFailed(SIGN_IN_FAILED)
    await throttle.succeeded(store, counted)
    if needs_rehash:
        await identity_sql.replace_password_hash(
            store,
            user.id,
            await hash_password(password, settings),
            moment,
            end_sessions=False,
            expected_hash=stored,
        )
    session, cookie_value = _new_session(user, settings, address, moment)
    await identity_sql.insert_session(store, session)
    log.info("user %s signed in from %s (session %s)", user.id, address, session.id)
    return session, cookie_value


def _new_session(
    user: UserRecord, settings: Settings, address: str | None, now: int
) -> tuple[Session, str]:
    session_id = "ses_" + secrets.token_hex(12)
    secret = secrets.token_urlsafe(32)
    expires_at = now + settings.session_lifetime_seconds
    idle = settings.session_idle_seconds
    session = Session(
        id=session_id,
        secret_hash=_secret_hash(secret),
        user_id=user.id,
        created_at=now,
        expires_at=expires_at,
        idle_expires_at=min(now + idle, expires_at),
        idle_seconds=idle,
        last_seen_at=now,
        address=address[:64] if address else None,
    )
    return session, f"{session_id}.{secret}"


async def _live_session(
    store: SqlStore, cookie_value: str | None
) -> tuple[Session, UserRecord] | None:
    """The session and user a cookie names, if its secret matches (expiry not checked)."""
    parsed = parse_cookie_value(cookie_value)
    if parsed is None:
        return None
    session_id, secret = parsed
    found = await identity_sql.session_and_user(store, session_id)
    if found is None:
        _secret_hash(secret)  # the same work as a found session's check
        return None
    session, user = found
    if not hmac.compare_digest(_secret_hash(secret), session.secret_hash):
        return None
    return session, user


async def verify_session(
    store: SqlStore, cookie_value: str | None, address: str | None, *, now: int | None = None
) -> Principal | None:
    """The :class:`Principal` of a live session's cookie (``via="session"``), else ``None``
    (no cookie, not ours, wrong secret, expired, signed out, user disabled).

    Each use moves the session's idle end forward (written at most once a minute)."""
    found = await _live_session(store, cookie_value)
    if found is None:
        return None
    session, user = found
    moment = _now(now)
    if (
        moment >= session.expires_at
        or moment >= session.idle_expires_at
        or user.disabled
        or user.password_changed_at > session.created_at
    ):
        await identity_sql.delete_session(store, session.id)
        return None
    touch_every = min(TOUCH_SECONDS, max(1, session.idle_seconds // 10))
    if moment - session.last_seen_at >= touch_every and not await identity_sql.touch_session(
        store, session.id, moment
    ):
        return None  # ended meanwhile (signed out, or expired on another replica)
    role: Role = "admin" if user.role == "admin" else "member"
    return Principal(
        via="session",
        id=user.id,
        role=role,
        account_id=user.account_id,
        address=address,
        session_id=session.id,
    )


def check_csrf(cookie_value: str | None, principal: Principal, token: str | None) -> None:
    """Require the CSRF token of a cookie-authenticated write (raises :class:`PermissionDenied`).

    ``cookie_value`` is the session cookie the request carried (the one :func:`verify_session`
    accepted for ``principal``) and ``token`` the request's ``X-CSRF-Token`` header or form
    field. Principals that did not come from a cookie (admin tokens, the CLI) carry no ambient
    credential a cross-site page could use, and pass."""
    if principal.via != "session":
        return
    parsed = parse_cookie_value(cookie_value)
    if parsed is None or token is None or len(token) > MAX_COOKIE_CHARS:
        raise PermissionDenied(CSRF_FAILED)
    if cookie_value is None or parsed[0] != principal.session_id:
        raise PermissionDenied(CSRF_FAILED)
    expected = csrf_token(cookie_value).encode()
    if not hmac.compare_digest(expected, token.encode("utf-8", "replace")):
        raise PermissionDenied(CSRF_FAILED)


async def sign_out(store: SqlStore, cookie_value: str | None) -> bool:
    """End the session of ``cookie_value`` (its row is deleted); whether there was one.

    Only the whole cookie ends a session: knowing a session's public id is not enough."""
    found = await _live_session(store, cookie_value)
    if found is None:
        return False
    session, user = found
    deleted = await identity_sql.delete_session(store, session.id)
    if deleted:
        log.info("user %s signed out (session %s)", user.id, session.id)
    return deleted


async def purge_expired_sessions(store: SqlStore, *, now: int | None = None) -> int:
    """Delete every expired session (a periodic chore; expired ones never verify anyway)."""
    return await identity_sql.purge_sessions(store, _now(now))
