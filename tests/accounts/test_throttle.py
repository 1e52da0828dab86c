"""Sign-in throttling per address and per email, across processes (two store connections)."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from relaygate.accounts.sessions import SIGN_IN_FAILED, sign_in, verify_session
from relaygate.accounts.throttle import THROTTLED_MESSAGE, address_subject
from relaygate.accounts.users import create_user
from relaygate.errors import AuthenticationFailed, RateLimited
from relaygate.settings import Settings
from relaygate.store.sql import SqlStore
from tests.accounts.identity_support import FAST, PASSWORD, Backend, backend, store

__all__ = ["backend", "store"]

T0 = 1_800_000_000
EMAIL = "ada@example.com"
SETTINGS = msgspec.structs.replace(
    FAST,
    sign_in_failures_per_email=3,
    sign_in_failures_per_address=5,
    sign_in_window_seconds=900,
)


async def attempt(
    store: SqlStore,
    email: str,
    password: str,
    address: str,
    now: int,
    settings: Settings = SETTINGS,
) -> str:
    """``ok``, ``failed`` or ``throttled:<Retry-After>``."""
    try:
        await sign_in(store, settings, email, password, address, now=now)
    except AuthenticationFailed as exc:
        return "failed" if exc.message == SIGN_IN_FAILED else f"other message: {exc.message}"
    except RateLimited as exc:
        if exc.message != THROTTLED_MESSAGE:
            return f"other message: {exc.message}"
        retry_after = dict(exc.headers())[b"retry-after"].decode()
        return f"throttled:{retry_after}"
    return "ok"


@pytest.mark.parametrize(
    "known", [pytest.param(True, id="known"), pytest.param(False, id="unknown")]
)
async def test_an_email_is_throttled_whether_it_exists_or_not(store: SqlStore, known: bool) -> None:
    if known:
        await create_user(store, EMAIL, PASSWORD, "admin", None, settings=FAST)
    results = [
        await attempt(store, EMAIL, "wrong password", f"192.0.2.{i}", T0 + i * 10) for i in range(3)
    ]
    assert results == ["failed"] * 3
    # the next attempt is refused before the password is looked at: even the right one
    assert await attempt(store, EMAIL, PASSWORD, "192.0.2.50", T0 + 100) == "throttled:800"
    # another email is not throttled by this one
    assert await attempt(store, "eda@example.com", PASSWORD, "192.0.2.50", T0 + 100) == "failed"
    # when the window ends, attempts count afresh
    expected = "ok" if known else "failed"
    assert await attempt(store, EMAIL, PASSWORD, "192.0.2.51", T0 + 900) == expected


async def test_an_address_is_throttled_across_emails(store: SqlStore) -> None:
    results = [
        await attempt(store, f"user{i}@example.com", "wrong password", "198.51.100.4", T0 + i)
        for i in range(6)
    ]
    assert results == ["failed"] * 5 + ["throttled:895"]
    # another address is not
    assert await attempt(store, "user9@example.com", "x", "198.51.100.5", T0 + 6) == "failed"


async def test_an_ipv6_client_is_throttled_by_its_64(store: SqlStore) -> None:
    assert address_subject("2001:db8:1:2::1") == address_subject("2001:db8:1:2:ffff::9")
    assert address_subject("2001:db8:1:2::1") != address_subject("2001:db8:1:3::1")
    assert address_subject("::ffff:192.0.2.1") == address_subject("192.0.2.1")
    results = [
        await attempt(store, f"u{i}@example.com", "wrong", f"2001:db8:1:2::{i + 1:x}", T0)
        for i in range(6)
    ]
    assert results == ["failed"] * 5 + ["throttled:900"]


async def test_a_successful_sign_in_gives_its_attempt_back(store: SqlStore) -> None:
    await create_user(store, EMAIL, PASSWORD, "admin", None, settings=FAST)
    address = "203.0.113.9"
    # two mistakes, then the right password: the email starts afresh
    for i in range(2):
        assert await attempt(store, EMAIL, "typo", address, T0 + i) == "failed"
    assert await attempt(store, EMAIL, PASSWORD, address, T0 + 2) == "ok"
    for i in range(2):
        assert await attempt(store, EMAIL, "typo", address, T0 + 3 + i) == "failed"
    assert await attempt(store, EMAIL, PASSWORD, address, T0 + 5) == "ok"
    # four failures from the address so far, successes not counted: one more is allowed
    assert await attempt(store, "x@example.com", "typo", address, T0 + 6) == "failed"
    assert await attempt(store, EMAIL, PASSWORD, address, T0 + 7) == "throttled:893"


async def test_the_limit_holds_across_processes(backend: Backend) -> None:
    """Two stores on one database, as two workers or replicas have: 40 concurrent attempts
    at one email, half through each, let exactly the limit through to the password check."""
    first, second = backend.open(), backend.open()
    await first.upgrade()
    await second.upgrade()
    await create_user(first, EMAIL, PASSWORD, "admin", None, settings=FAST)
    results = await asyncio.gather(
        *(
            attempt(first if i % 2 else second, EMAIL, "wrong password", f"192.0.2.{i}", T0)
            for i in range(40)
        )
    )
    assert results.count("failed") == SETTINGS.sign_in_failures_per_email
    assert results.count("throttled:900") == 40 - SETTINGS.sign_in_failures_per_email
    # and each process sees the other's count
    assert await attempt(first, EMAIL, PASSWORD, "192.0.2.200", T0 + 1) == "throttled:899"
    assert await attempt(second, EMAIL, PASSWORD, "192.0.2.200", T0 + 1) == "throttled:899"


async def test_a_session_still_works_while_its_email_is_throttled(store: SqlStore) -> None:
    await create_user(store, EMAIL, PASSWORD, "admin", None, settings=FAST)
    _, cookie = await sign_in(store, SETTINGS, EMAIL, PASSWORD, "192.0.2.1", now=T0)
    for i in range(4):
        await attempt(store, EMAIL, "guess", "198.51.100.1", T0 + i)
    assert await verify_session(store, cookie, "192.0.2.1", now=T0 + 5) is not None
