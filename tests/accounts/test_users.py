"""Console users: creation rules, the password policy, hashing at rest, disabling, listing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from relaygate.accounts.passwords import (
    MAX_CONCURRENT_HASHES,
    MAX_PASSWORD_BYTES,
    MAX_WAITING_HASHES,
    check_password,
    hash_password,
)
from relaygate.accounts.sessions import sign_in, verify_session
from relaygate.accounts.users import (
    create_user,
    disable_user,
    get_user,
    list_users,
    normalise_email,
    set_password,
    user_view,
)
from relaygate.errors import AuthenticationFailed, InvalidRequest, NotFound, ServerBusy
from relaygate.store.schema import users
from relaygate.store.sql import SqlStore
from tests.accounts.identity_support import (
    FAST,
    PASSWORD,
    backend,
    make_account,
    sqlite_bytes,
    store,
)

__all__ = ["backend", "store"]


async def test_admin_and_member_are_created_with_their_account(store: SqlStore) -> None:
    account = await make_account(store)
    admin = await create_user(store, "Ops@Example.COM ", PASSWORD, "admin", None, settings=FAST)
    member = await create_user(
        store, "owner@acme.test", PASSWORD, "member", account, settings=FAST, now=1_800_000_000
    )
    assert (admin.email, admin.role, admin.account_id) == ("ops@example.com", "admin", None)
    assert (member.role, member.account_id, member.created_at) == ("member", account, 1_800_000_000)
    assert await get_user(store, member.id) == member
    assert "password_hash" not in user_view(member)


@pytest.mark.parametrize(
    ("role", "with_account", "error", "param"),
    [
        pytest.param("member", False, InvalidRequest, "account_id", id="member-without-account"),
        pytest.param("admin", True, InvalidRequest, "account_id", id="admin-with-account"),
        pytest.param("owner", False, InvalidRequest, "role", id="unknown-role"),
    ],
)
async def test_role_and_account_must_agree(
    store: SqlStore, role: str, with_account: bool, error: type[Exception], param: str
) -> None:
    account = await make_account(store) if with_account else None
    with pytest.raises(error) as caught:
        await create_user(store, "a@example.com", PASSWORD, role, account, settings=FAST)
    assert getattr(caught.value, "param", None) == param
    assert await list_users(store) == []


async def test_a_member_of_an_unknown_account_is_refused(store: SqlStore) -> None:
    with pytest.raises(NotFound):
        await create_user(store, "a@example.com", PASSWORD, "member", "acct_nope", settings=FAST)
    assert await list_users(store) == []


async def test_emails_are_unique_whatever_their_case(store: SqlStore) -> None:
    await create_user(store, "Ada@Example.com", PASSWORD, "admin", None, settings=FAST)
    with pytest.raises(InvalidRequest, match="exists"):
        await create_user(store, "  ada@EXAMPLE.com", PASSWORD, "admin", None, settings=FAST)
    assert len(await list_users(store)) == 1


@pytest.mark.parametrize(
    "email",
    [
        pytest.param("", id="empty"),
        pytest.param("no-at-sign", id="no-at"),
        pytest.param("@example.com", id="no-local"),
        pytest.param("a@", id="no-domain"),
        pytest.param("a@b@example.com", id="two-ats"),
        pytest.param("a b@example.com", id="space"),
        pytest.param("a\n@example.com", id="newline"),
        pytest.param("a@example.com.", id="trailing-dot"),
        pytest.param("x" * 65 + "@example.com", id="long-local"),
        pytest.param("a@" + "d" * 260, id="too-long"),
        pytest.param("a@example.com" + "x" * 1_000_000, id="one-megabyte"),
    ],
)
def test_bad_emails_are_refused(email: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        normalise_email(email)
    assert caught.value.param == "email"
    assert len(caught.value.message) < 100  # never an echo of the input


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        pytest.param("short", "at least 12", id="too-short"),
        pytest.param("x" * (MAX_PASSWORD_BYTES + 1), "at most", id="too-long"),
        pytest.param("é" * (MAX_PASSWORD_BYTES // 2 + 1), "at most", id="too-many-bytes"),
        pytest.param("x" * 1_000_000, "at most", id="one-megabyte"),
        pytest.param("twelve chars\nplus", "control", id="newline"),
    ],
)
def test_the_password_policy(password: str, problem: str) -> None:
    with pytest.raises(InvalidRequest, match=problem) as caught:
        check_password(password, FAST)
    assert password not in caught.value.message
    assert caught.value.param == "password"


async def test_the_minimum_length_is_a_setting(store: SqlStore) -> None:
    strict = msgspec.structs.replace(FAST, password_min_length=20)
    with pytest.raises(InvalidRequest, match="at least 20"):
        await create_user(store, "a@example.com", PASSWORD[:19], "admin", None, settings=strict)
    user = await create_user(
        store, "a@example.com", "x" * MAX_PASSWORD_BYTES, "admin", None, settings=strict
    )
    assert user.id


async def test_the_password_is_stored_only_as_an_argon2id_hash(
    store: SqlStore, tmp_path: Path
) -> None:
    user = await create_user(store, "a@example.com", PASSWORD, "admin", None, settings=FAST)
    async with store.engine.begin() as conn:
        stored = (await conn.execute(select(users.c.password_hash))).scalar_one()
    assert stored == user.password_hash
    assert stored.startswith("$argon2id$v=19$m=8192,t=1,p=1$")
    assert PASSWORD not in stored
    assert PasswordHasher().verify(stored, PASSWORD)
    if store.dialect == "sqlite":
        assert PASSWORD.encode() not in sqlite_bytes(tmp_path)


@pytest.fixture
def argon2_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every argon2 hash and verify made while the test runs (argon2-cffi's, not our code)."""
    calls: list[str] = []
    real_hash, real_verify = PasswordHasher.hash, PasswordHasher.verify

    def counting_hash(self: PasswordHasher, password: str | bytes, **kwargs: object) -> str:
        calls.append("hash")
        return real_hash(self, password, **kwargs)  # type: ignore[arg-type]

    def counting_verify(self: PasswordHasher, stored: str | bytes, password: str | bytes) -> bool:
        calls.append("verify")
        return real_verify(self, stored, password)

    monkeypatch.setattr(PasswordHasher, "hash", counting_hash)
    monkeypatch.setattr(PasswordHasher, "verify", counting_verify)
    return calls


async def test_oversized_input_is_refused_before_any_hashing(
    store: SqlStore, argon2_calls: list[str]
) -> None:
    huge = "p" * 1_000_000
    with pytest.raises(InvalidRequest):
        await create_user(store, "a@example.com", huge, "admin", None, settings=FAST)
    with pytest.raises(InvalidRequest):
        await create_user(
            store, "a" * 1_000_000 + "@example.com", PASSWORD, "admin", None, settings=FAST
        )
    with pytest.raises(InvalidRequest):
        await sign_in(store, FAST, "a@example.com", huge, "192.0.2.1")
    with pytest.raises(InvalidRequest):
        await sign_in(store, FAST, "a" * 1_000_000 + "@example.com", PASSWORD, "192.0.2.1")
    assert argon2_calls == []
    # and the refused attempts were not counted against the address either
    await create_user(store, "a@example.com", PASSWORD, "admin", None, settings=FAST)
    for _ in range(FAST.sign_in_failures_per_email):
        with pytest.raises(AuthenticationFailed):
            await sign_in(store, FAST, "a@example.com", "wrong password!", "192.0.2.1")


async def test_a_disabled_user_cannot_sign_in_and_loses_their_sessions(store: SqlStore) -> None:
    user = await create_user(store, "a@example.com", PASSWORD, "admin", None, settings=FAST)
    _, cookie = await sign_in(store, FAST, "a@example.com", PASSWORD, "192.0.2.1")
    assert await verify_session(store, cookie, "192.0.2.1") is not None
    disabled = await disable_user(store, user.id, now=1_800_000_000)
    assert disabled.disabled_at == 1_800_000_000
    assert (await disable_user(store, user.id, now=1_900_000_000)).disabled_at == 1_800_000_000
    assert await verify_session(store, cookie, "192.0.2.1") is None
    with pytest.raises(AuthenticationFailed):
        await sign_in(store, FAST, "a@example.com", PASSWORD, "192.0.2.1")
    with pytest.raises(NotFound):
        await disable_user(store, "usr_nope")


async def test_a_new_password_ends_every_session(store: SqlStore) -> None:
    user = await create_user(store, "a@example.com", PASSWORD, "admin", None, settings=FAST)
    _, first = await sign_in(store, FAST, "a@example.com", PASSWORD, "192.0.2.1")
    _, second = await sign_in(store, FAST, "a@example.com", PASSWORD, "192.0.2.2")
    await set_password(store, user.id, "a brand new passphrase", settings=FAST)
    assert await verify_session(store, first, None) is None
    assert await verify_session(store, second, None) is None
    with pytest.raises(AuthenticationFailed):
        await sign_in(store, FAST, "a@example.com", PASSWORD, "192.0.2.1")
    _, third = await sign_in(store, FAST, "a@example.com", "a brand new passphrase", "192.0.2.1")
    assert await verify_session(store, third, None) is not None
    with pytest.raises(InvalidRequest):
        await set_password(store, user.id, "short", settings=FAST)
    with pytest.raises(NotFound):
        await set_password(store, "usr_nope", "a brand new passphrase", settings=FAST)


async def test_a_changed_hash_cost_rehashes_at_the_next_sign_in(store: SqlStore) -> None:
    user = await create_user(store, "a@example.com", PASSWORD, "admin", None, settings=FAST)
    stronger = msgspec.structs.replace(FAST, password_hash_time_cost=2)
    await sign_in(store, stronger, "a@example.com", PASSWORD, "192.0.2.1")
    rehashed = await get_user(store, user.id)
    assert rehashed.password_hash != user.password_hash
    assert rehashed.password_hash.startswith("$argon2id$v=19$m=8192,t=2,p=1$")
    # the same parameters again: nothing to redo
    await sign_in(store, stronger, "a@example.com", PASSWORD, "192.0.2.1")
    assert (await get_user(store, user.id)).password_hash == rehashed.password_hash
    # a rehash is not a password change: sessions live on
    _, cookie = await sign_in(store, stronger, "a@example.com", PASSWORD, "192.0.2.1")
    await sign_in(store, FAST, "a@example.com", PASSWORD, "192.0.2.1")
    assert await verify_session(store, cookie, None) is not None


async def test_list_users_pages_and_filters_by_account(store: SqlStore) -> None:
    acme, globex = await make_account(store), await make_account(store, "Globex")
    made = [
        await create_user(
            store, f"u{i}@example.com", PASSWORD, "member", acme if i % 2 else globex, settings=FAST
        )
        for i in range(5)
    ]
    first = await list_users(store, limit=2)
    rest = await list_users(store, limit=10, after=first[-1].id)
    assert [u.id for u in first + rest] == sorted(u.id for u in made)
    assert {u.id for u in await list_users(store, account_id=acme)} == {
        u.id for u in made if u.account_id == acme
    }


async def test_a_flood_of_hashes_queues_boundedly_then_gets_503() -> None:
    """All at once: as many hash as there are slots, a bounded number wait, the rest get 503
    at once (a sign-in flood from many addresses must not queue without end)."""
    results = await asyncio.gather(
        *(hash_password(PASSWORD, FAST) for _ in range(200)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, ServerBusy)]
    hashed = [r for r in results if isinstance(r, str)]
    assert len(hashed) == MAX_CONCURRENT_HASHES + MAX_WAITING_HASHES
    assert len(refused) == 200 - len(hashed)
    assert refused[0].headers() == [(b"retry-after", b"1")]
    # and the slots are free again
    assert (await hash_password(PASSWORD, FAST)).startswith("$argon2id$")
