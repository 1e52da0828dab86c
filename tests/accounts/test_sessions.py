"""Sessions: sign-in and its one error, the cookie secret at rest, expiry, sign-out, CSRF."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import select

from relaygate.accounts import tokens
from relaygate.accounts.principal import Principal
from relaygate.accounts.sessions import (
    CSRF_FAILED,
    SIGN_IN_FAILED,
    TOUCH_SECONDS,
    check_csrf,
    csrf_token,
    parse_cookie_value,
    purge_expired_sessions,
    sign_in,
    sign_out,
    verify_session,
)
from relaygate.accounts.users import create_user, disable_user
from relaygate.errors import AuthenticationFailed, PermissionDenied
from relaygate.store.identity_sql import MAX_SESSIONS_PER_USER
from relaygate.store.schema import sessions
from relaygate.store.sql import SqlStore
from tests.accounts.conftest import CLI
from tests.accounts.identity_support import (
    FAST,
    PASSWORD,
    backend,
    make_account,
    sqlite_bytes,
    store,
)

__all__ = ["backend", "store"]

T0 = 1_800_000_000
EMAIL = "owner@acme.test"


async def member(store: SqlStore) -> str:
    account = await make_account(store)
    await create_user(store, EMAIL, PASSWORD, "member", account, settings=FAST)
    return account


async def test_sign_in_opens_a_session_the_cookie_names(store: SqlStore) -> None:
    account = await member(store)
    session, cookie = await sign_in(store, FAST, " Owner@Acme.TEST", PASSWORD, "192.0.2.7", now=T0)
    session_id, secret = cookie.split(".")
    assert session_id == session.id
    assert session_id.startswith("ses_")
    assert len(secret) == 43  # 256 random bits, base64url
    assert (session.created_at, session.address) == (T0, "192.0.2.7")
    assert session.expires_at == T0 + FAST.session_lifetime_seconds
    assert session.idle_expires_at == T0 + FAST.session_idle_seconds
    principal = await verify_session(store, cookie, "198.51.100.9", now=T0 + 1)
    assert principal == Principal(
        via="session",
        id=session.user_id,
        role="member",
        account_id=account,
        address="198.51.100.9",
        session_id=session.id,
    )
    assert principal.may_see(account)
    assert not principal.may_see("acct_other")


async def test_the_store_holds_only_the_hash_of_the_cookie_secret(
    store: SqlStore, tmp_path: Path
) -> None:
    await member(store)
    _, cookie = await sign_in(store, FAST, EMAIL, PASSWORD, "192.0.2.7")
    secret = cookie.split(".")[1]
    async with store.engine.begin() as conn:
        row = (await conn.execute(select(sessions))).one()._mapping
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in {str(value) for value in row.values()}
    if store.dialect == "sqlite":
        assert secret.encode() not in sqlite_bytes(tmp_path)


async def test_wrong_password_unknown_email_and_disabled_user_fail_alike(
    store: SqlStore,
) -> None:
    await member(store)
    other = await create_user(store, "gone@acme.test", PASSWORD, "admin", None, settings=FAST)
    await disable_user(store, other.id)
    failures = []
    for email, password in [
        (EMAIL, "not the password"),
        ("nobody@acme.test", PASSWORD),
        ("gone@acme.test", PASSWORD),
        (EMAIL, ""),
    ]:
        with pytest.raises(AuthenticationFailed) as caught:
            await sign_in(store, FAST, email, password, "192.0.2.7")
        failures.append(
            (
                type(caught.value),
                caught.value.message,
                caught.value.status,
                caught.value.param,
                caught.value.headers(),
            )
        )
    assert failures == [(AuthenticationFailed, SIGN_IN_FAILED, 401, None, [])] * 4


@pytest.mark.parametrize(
    "cookie",
    [
        pytest.param(None, id="none"),
        pytest.param("", id="empty"),
        pytest.param("ses_0123", id="short"),
        pytest.param("x" * 10_000, id="huge"),
        pytest.param("ses_" + "0" * 24 + "." + "A" * 43, id="unknown-session"),
    ],
)
async def test_cookies_that_are_not_sessions_verify_as_none(
    store: SqlStore, cookie: str | None
) -> None:
    assert await verify_session(store, cookie, None) is None
    assert await sign_out(store, cookie) is False


async def test_the_right_id_with_a_wrong_secret_is_refused(store: SqlStore) -> None:
    await member(store)
    session, cookie = await sign_in(store, FAST, EMAIL, PASSWORD, "192.0.2.7", now=T0)
    forged = session.id + "." + "A" * 43
    assert parse_cookie_value(forged) is not None
    assert await verify_session(store, forged, None, now=T0) is None
    assert await sign_out(store, forged) is False  # the public id alone ends nothing
    assert await verify_session(store, cookie, None, now=T0) is not None


async def test_a_session_ends_at_its_absolute_lifetime(store: SqlStore) -> None:
    await member(store)
    settings = msgspec.structs.replace(
        FAST, session_lifetime_seconds=3600, session_idle_seconds=1800
    )
    _, cookie = await sign_in(store, settings, EMAIL, PASSWORD, None, now=T0)
    # used every 20 minutes, it never idles out, but it still ends after an hour
    for minute in (20, 40, 59):
        assert await verify_session(store, cookie, None, now=T0 + minute * 60) is not None
    assert await verify_session(store, cookie, None, now=T0 + 3600) is None
    async with store.engine.begin() as conn:  # and its row is gone
        assert (await conn.execute(select(sessions))).all() == []


async def test_a_session_idles_out_and_each_use_moves_its_idle_end(store: SqlStore) -> None:
    await member(store)
    settings = msgspec.structs.replace(FAST, session_idle_seconds=600)
    _, idle = await sign_in(store, settings, EMAIL, PASSWORD, None, now=T0)
    _, used = await sign_in(store, settings, EMAIL, PASSWORD, None, now=T0)
    assert await verify_session(store, used, None, now=T0 + 500) is not None
    assert await verify_session(store, idle, None, now=T0 + 600) is None
    assert await verify_session(store, used, None, now=T0 + 1000) is not None
    assert await verify_session(store, used, None, now=T0 + 1099) is not None
    assert await verify_session(store, used, None, now=T0 + 1699) is None


async def test_lookups_do_not_take_the_write_lock(store: SqlStore) -> None:
    """A session's and an admin token's lookup (every admin request makes one) are plain reads
    on SQLite: they complete while another connection holds the one write lock (the ledger
    writer's), instead of queueing behind it. A session's last use is written at most once per
    TOUCH_SECONDS, so uses within that interval write nothing either."""
    if store.dialect != "sqlite":
        pytest.skip("SQLite's write lock")
    await member(store)
    _, cookie = await sign_in(store, FAST, EMAIL, PASSWORD, None, now=T0)
    _, token = await tokens.create_admin_token(store, CLI, "ci")
    path = store.engine.url.database
    assert path
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE sessions SET address = 'held'")  # not committed
        for elapsed in (1, TOUCH_SECONDS // 2, TOUCH_SECONDS - 1):
            principal = await verify_session(store, cookie, None, now=T0 + elapsed)
            assert principal is not None
        assert await tokens.verify_admin_token(store, token, None) is not None
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    async with store.engine.begin() as conn:
        [(last_seen, idle_end)] = (
            await conn.execute(select(sessions.c.last_seen_at, sessions.c.idle_expires_at))
        ).all()
    assert (last_seen, idle_end) == (T0, T0 + FAST.session_idle_seconds)  # nothing written
    # past the interval, a use moves the idle end forward again
    assert await verify_session(store, cookie, None, now=T0 + TOUCH_SECONDS) is not None
    async with store.engine.begin() as conn:
        [(last_seen, idle_end)] = (
            await conn.execute(select(sessions.c.last_seen_at, sessions.c.idle_expires_at))
        ).all()
    assert last_seen == T0 + TOUCH_SECONDS
    assert idle_end == T0 + TOUCH_SECONDS + FAST.session_idle_seconds


async def test_sign_out_deletes_the_session(store: SqlStore) -> None:
    await member(store)
    _, cookie = await sign_in(store, FAST, EMAIL, PASSWORD, None)
    _, other = await sign_in(store, FAST, EMAIL, PASSWORD, None)
    assert await sign_out(store, cookie) is True
    assert await verify_session(store, cookie, None) is None
    assert await sign_out(store, cookie) is False
    assert await verify_session(store, other, None) is not None  # only that one


async def test_a_user_keeps_at_most_a_bounded_number_of_sessions(store: SqlStore) -> None:
    await member(store)
    cookies = [
        (await sign_in(store, FAST, EMAIL, PASSWORD, None, now=T0 + i))[1]
        for i in range(MAX_SESSIONS_PER_USER + 2)
    ]
    assert await verify_session(store, cookies[0], None, now=T0 + 30) is None
    assert await verify_session(store, cookies[1], None, now=T0 + 30) is None
    assert await verify_session(store, cookies[2], None, now=T0 + 30) is not None
    assert await verify_session(store, cookies[-1], None, now=T0 + 30) is not None


async def test_expired_sessions_are_purged(store: SqlStore) -> None:
    await member(store)
    await sign_in(store, FAST, EMAIL, PASSWORD, None, now=T0)
    await sign_in(store, FAST, EMAIL, PASSWORD, None, now=T0 + 10)
    assert await purge_expired_sessions(store, now=T0 + FAST.session_idle_seconds + 5) == 1
    assert await purge_expired_sessions(store, now=T0 + FAST.session_lifetime_seconds) == 1


async def test_csrf_token_is_required_for_session_writes(store: SqlStore) -> None:
    await member(store)
    _, cookie = await sign_in(store, FAST, EMAIL, PASSWORD, None)
    _, other_cookie = await sign_in(store, FAST, EMAIL, PASSWORD, None)
    principal = await verify_session(store, cookie, None)
    assert principal is not None
    token = csrf_token(cookie)
    assert token == csrf_token(cookie)  # derived: the same on every request
    assert len(token) == 43
    assert token not in cookie
    check_csrf(cookie, principal, token)
    for wrong_cookie, wrong_token in [
        (cookie, None),
        (cookie, ""),
        (cookie, token[:-1] + ("A" if token[-1] != "A" else "B")),
        (cookie, csrf_token(other_cookie)),  # another session's token
        (other_cookie, csrf_token(other_cookie)),  # another session's cookie and token
        (None, token),
        (cookie, token + "x" * 1000),
        (cookie, "é" * 43),
    ]:
        with pytest.raises(PermissionDenied) as caught:
            check_csrf(wrong_cookie, principal, wrong_token)
        assert caught.value.message == CSRF_FAILED


def test_principals_without_a_cookie_need_no_csrf_token() -> None:
    check_csrf(None, Principal(via="admin_token", id="adm_1", role="admin"), None)
    check_csrf(None, Principal(via="cli", id="cli", role="admin"), None)


async def test_passwords_and_secrets_never_reach_the_log(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await member(store)
    session, cookie = await sign_in(store, FAST, EMAIL, PASSWORD, "192.0.2.7")
    with pytest.raises(AuthenticationFailed) as caught:
        await sign_in(store, FAST, EMAIL, "a wrong password, also secret", "192.0.2.7")
    principal = await verify_session(store, cookie, "192.0.2.7")
    assert principal is not None
    await sign_out(store, cookie)
    text = caplog.text + str(caught.value)
    assert "signed in" in caplog.text
    assert "sign-in failed" in caplog.text
    for secret in (
        PASSWORD,
        "a wrong password, also secret",
        cookie,
        cookie.split(".")[1],
        csrf_token(cookie),
    ):
        assert secret not in text
    assert session.id in caplog.text  # the public id may be logged, and is
