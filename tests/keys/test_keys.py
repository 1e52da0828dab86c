"""API keys: generation, hashing, the bearer header, and the cache that authenticates."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from relaygate.errors import AuthenticationFailed, PermissionDenied
from relaygate.keys import KeyCache, bearer_token, display_prefix, hash_key, new_key, new_key_id
from relaygate.store import KeyRecord, SqlStore

URLSAFE = re.compile(r"^[A-Za-z0-9_-]+$")
NOW = 1_800_000_000


# --- tokens ----------------------------------------------------------------------------------


def test_new_key_has_the_prefix_and_at_least_40_random_characters() -> None:
    keys = [new_key() for _ in range(200)]
    for key in keys:
        assert key.startswith("sk-")
        assert len(key) - len("sk-") >= 40
        assert URLSAFE.match(key[3:]), key
    assert len(set(keys)) == len(keys)
    # the random part really varies in every position, not just a counter at the end
    assert len({key[3:13] for key in keys}) == len(keys)


def test_new_key_ids_are_unique_and_not_keys() -> None:
    ids = {new_key_id() for _ in range(200)}
    assert len(ids) == 200
    assert not any(key_id.startswith("sk-") for key_id in ids)


def test_hash_key_is_sha256_hex() -> None:
    key = new_key()
    digest = hash_key(key)
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert hash_key(key) == digest
    assert hash_key(new_key()) != digest


def test_the_display_prefix_is_not_enough_to_use_the_key() -> None:
    key = new_key()
    prefix = display_prefix(key)
    assert key.startswith(prefix)
    assert len(key) - len(prefix) >= 32


async def test_the_stored_record_does_not_contain_the_key(store: SqlStore) -> None:
    key, record = await issue(store, name="laptop")
    stored = await store.get_key(record.id)
    assert stored is not None
    secret = key[len(stored.prefix) :]
    for value in astuple(stored):
        text = str(value)
        assert key not in text
        assert secret not in text
        assert secret[:16] not in text


# --- the Authorization header ----------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="missing"),
        pytest.param(b"", id="empty-header"),
        pytest.param(b"Basic dXNlcjpwYXNz", id="wrong-scheme"),
        pytest.param(b"Bearer", id="no-token"),
        pytest.param(b"Bearer    ", id="blank-token"),
        pytest.param(b"sk-abcdef", id="no-scheme"),
        pytest.param(b"Token sk-abcdef", id="token-scheme"),
    ],
)
def test_bearer_token_rejects_bad_headers_with_401(header: bytes | None) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        bearer_token(header)
    assert caught.value.status == 401
    assert caught.value.type == "authentication_error"
    assert "Bearer" in caught.value.message


def test_missing_and_malformed_headers_say_which() -> None:
    with pytest.raises(AuthenticationFailed, match="Missing"):
        bearer_token(None)
    with pytest.raises(AuthenticationFailed, match="Malformed"):
        bearer_token(b"Basic abc")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        pytest.param(b"Bearer sk-abc", "sk-abc", id="plain"),
        pytest.param(b"bearer sk-abc", "sk-abc", id="lower-case-scheme"),
        pytest.param(b"BEARER sk-abc", "sk-abc", id="upper-case-scheme"),
        pytest.param(b"Bearer  sk-abc  ", "sk-abc", id="extra-spaces"),
    ],
)
def test_bearer_token_returns_the_token(header: bytes, token: str) -> None:
    assert bearer_token(header) == token


# --- the key cache on a real store -----------------------------------------------------------


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    opened = SqlStore(f"sqlite:///{tmp_path / 'keys.db'}")
    await opened.upgrade()
    yield opened
    await opened.close()


@pytest_asyncio.fixture
async def cache(store: SqlStore) -> AsyncIterator[KeyCache]:
    keys = KeyCache(store, refresh_seconds=0.01)
    yield keys
    await keys.close()


async def issue(store: SqlStore, **fields: Any) -> tuple[str, KeyRecord]:
    """Create a key the way the CLI does; returns the raw key and the stored record."""
    key = new_key()
    record = KeyRecord(
        id=new_key_id(),
        name=fields.pop("name", ""),
        key_hash=hash_key(key),
        prefix=display_prefix(key),
        created_at=NOW - 100,
        **fields,
    )
    return key, await store.create_key(record)


def bearer(key: str) -> bytes:
    return f"Bearer {key}".encode()


def rejected(cache: KeyCache, header: bytes | None, now: float = NOW) -> AuthenticationFailed:
    with pytest.raises(AuthenticationFailed) as caught:
        cache.authenticate(header, now=now)
    assert caught.value.status == 401
    return caught.value


async def test_authenticate_returns_the_key_record(store: SqlStore, cache: KeyCache) -> None:
    key, record = await issue(store, granted_micros=5_000_000, models=("gpt-5.2",))
    assert await cache.refresh() == 1
    assert cache.authenticate(bearer(key), now=NOW) == record


async def test_unknown_key_is_401_and_not_echoed(store: SqlStore, cache: KeyCache) -> None:
    await issue(store)
    await cache.refresh()
    stranger = new_key()
    error = rejected(cache, bearer(stranger))
    assert stranger not in error.message
    assert "not known" in error.message


async def test_a_key_not_yet_refreshed_is_unknown(store: SqlStore, cache: KeyCache) -> None:
    key, _ = await issue(store)
    rejected(cache, bearer(key))
    await cache.refresh()
    cache.authenticate(bearer(key), now=NOW)


async def test_revoked_key_is_401(store: SqlStore, cache: KeyCache) -> None:
    key, _ = await issue(store, revoked_at=NOW - 50)
    await cache.refresh()
    assert "revoked" in rejected(cache, bearer(key)).message


@pytest.mark.parametrize(
    ("expires_at", "accepted"),
    [
        pytest.param(NOW - 1, False, id="expired"),
        pytest.param(NOW, False, id="expiring-now"),
        pytest.param(NOW + 1, True, id="not-yet"),
        pytest.param(None, True, id="never"),
    ],
)
async def test_expired_key_is_401(
    store: SqlStore, cache: KeyCache, expires_at: int | None, accepted: bool
) -> None:
    key, record = await issue(store, expires_at=expires_at)
    await cache.refresh()
    if accepted:
        assert cache.authenticate(bearer(key), now=NOW).id == record.id
    else:
        assert "expired" in rejected(cache, bearer(key)).message


async def test_expiry_uses_the_clock_by_default(store: SqlStore, cache: KeyCache) -> None:
    expired, _ = await issue(store, expires_at=int(time.time()) - 3600)
    valid, _ = await issue(store, expires_at=int(time.time()) + 3600)
    await cache.refresh()
    with pytest.raises(AuthenticationFailed):
        cache.authenticate(bearer(expired))
    cache.authenticate(bearer(valid))


async def test_bad_header_is_401_before_any_lookup(store: SqlStore, cache: KeyCache) -> None:
    await issue(store)
    await cache.refresh()
    rejected(cache, None)
    rejected(cache, b"Basic abc")


async def test_refresh_picks_up_revocation_by_revision(store: SqlStore, cache: KeyCache) -> None:
    key, record = await issue(store)
    other_key, _ = await issue(store)
    assert await cache.refresh() == 2
    assert await cache.refresh() == 0
    cache.authenticate(bearer(key), now=NOW)

    revoked = await store.revoke_key(record.id, NOW - 10)
    assert revoked is not None
    cache.authenticate(bearer(key), now=NOW)  # served from the cache until the next refresh
    assert await cache.refresh() == 1
    assert cache.revision == revoked.revision
    assert "revoked" in rejected(cache, bearer(key)).message
    cache.authenticate(bearer(other_key), now=NOW)


async def test_refresh_picks_up_credit_changes(store: SqlStore, cache: KeyCache) -> None:
    key, record = await issue(store, granted_micros=1_000_000)
    seen: list[KeyRecord] = []
    cache.listeners.append(seen.append)
    await cache.refresh()
    assert [r.granted_micros for r in seen] == [1_000_000]

    credited = await store.add_credits(record.id, 2_500_000)
    assert credited is not None
    assert await cache.refresh() == 1
    assert cache.authenticate(bearer(key), now=NOW).granted_micros == 3_500_000
    assert cache.by_id[record.id].granted_micros == 3_500_000
    assert [r.granted_micros for r in seen] == [1_000_000, 3_500_000]
    assert cache.revision == credited.revision
    assert await cache.refresh() == 0


async def test_refresh_only_reads_changes_after_its_revision(
    store: SqlStore, cache: KeyCache
) -> None:
    _, first = await issue(store)
    await cache.refresh()
    _, second = await issue(store)
    seen: list[str] = []
    cache.listeners.append(lambda record: seen.append(record.id))
    assert await cache.refresh() == 1
    assert seen == [second.id]
    assert set(cache.by_id) == {first.id, second.id}


async def test_background_refresh_applies_revocation(store: SqlStore, cache: KeyCache) -> None:
    key, record = await issue(store)
    await cache.refresh()
    cache.start()
    await store.revoke_key(record.id, NOW - 10)
    deadline = asyncio.get_running_loop().time() + 5
    while cache.by_id[record.id].revoked_at is None:
        assert asyncio.get_running_loop().time() < deadline, "the revocation was not picked up"
        await asyncio.sleep(0.01)
    assert "revoked" in rejected(cache, bearer(key)).message


async def test_a_suspended_or_unknown_account_is_403_and_the_cache_follows_it(
    store: SqlStore, cache: KeyCache
) -> None:
    key, record = await issue(store)
    orphan, _ = await issue(store, account_id="acct_that_does_not_exist")
    await cache.refresh()
    assert cache.authenticate(bearer(key), now=NOW) == record
    assert cache.accounts[record.account_id].status == "active"
    await store.update_account(record.account_id, status="suspended")
    assert await cache.refresh() == 0  # no key changed: its account did
    with pytest.raises(PermissionDenied) as caught:
        cache.authenticate(bearer(key), now=NOW)
    assert caught.value.status == 403
    assert "suspended" in caught.value.message
    with pytest.raises(PermissionDenied) as caught:
        cache.authenticate(bearer(orphan), now=NOW)
    assert "does not exist" in caught.value.message
    await store.update_account(record.account_id, status="active")
    await cache.refresh()
    assert cache.authenticate(bearer(key), now=NOW) == record
