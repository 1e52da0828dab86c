"""Keys beneath accounts at the business layer, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import update

from relaygate.accounts import accounts, keys
from relaygate.errors import Conflict, InvalidRequest, NotFound
from relaygate.keys.tokens import hash_key
from relaygate.settings import Settings
from relaygate.store.records import AccountRecord, LedgerRow
from relaygate.store.schema import api_keys
from relaygate.store.sql import SqlStore
from tests.accounts.conftest import ADMIN, member, snapshot

MODELS = {"gpt-5.2", "relaygate-simulator"}
NOW = 1_800_000_000  # Friday 2027-01-15 08:00 UTC


async def _account(store: SqlStore, name: str = "Acme") -> AccountRecord:
    return await accounts.create_account(store, ADMIN, name=name, credits_micros=10_000_000)


async def _spend(store: SqlStore, key_id: str, used: int, period_used: int, start: int) -> None:
    """The key spent ``used`` in its lifetime, ``period_used`` of it at ``start`` (ledger rows
    and the key's own figures)."""
    key = await store.get_key(key_id)
    assert key is not None
    rows = [(f"{key_id}-old", used - period_used, 1_000), (f"{key_id}-new", period_used,
                                                           start * 1000)]
    await store.write_ledger([
        LedgerRow(request_id=rid, key_id=key_id, account_id=key.account_id, model="m",
                  upstream="u", upstream_model="m", created_at=at, status="ok",
                  cost_micros=cost, latency_ms=1, stream=False)
        for rid, cost, at in rows if cost])
    async with store.engine.begin() as conn:
        await conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id)
            .values(used_micros=used, period_used_micros=period_used, period_start=start)
        )


async def test_create_returns_the_key_once_and_stores_its_hash(store: SqlStore) -> None:
    account = await _account(store)
    fields = {"name": "ci", "models": ["gpt-5.2", "gpt-5.2"], "rpm": 60, "max_concurrency": 2,
              "expires_at": NOW + 3600, "spend_limit_micros": 1_000_000}
    record, raw = await keys.create_key(store, ADMIN, account.id, fields, known_models=MODELS,
                                        now=NOW)
    assert raw.startswith("sk-")
    assert record.key_hash == hash_key(raw)
    assert raw not in str(await snapshot(store))
    assert (record.account_id, record.name, record.models, record.rpm, record.max_concurrency) \
        == (account.id, "ci", ("gpt-5.2",), 60, 2)
    assert (record.spend_limit_micros, record.spend_limit_period) == (1_000_000, "total")
    assert record.revision > account.revision
    listed, more = await keys.list_keys(store, ADMIN, account.id, after=None, limit=10)
    assert ([k.id for k in listed], more) == ([record.id], False)


async def test_patch_and_revoke(store: SqlStore) -> None:
    account = await _account(store)
    record, _ = await keys.create_key(store, ADMIN, account.id, {"name": "a"}, now=NOW)
    changed = await keys.update_key(
        store, ADMIN, record.id,
        {"name": "b", "models": ["relaygate-simulator"], "tpm": 1000,
         "spend_limit_micros": 500, "spend_limit_period": "day"},
        known_models=MODELS, now=NOW,
    )
    assert (changed.name, changed.models, changed.tpm) == ("b", ("relaygate-simulator",), 1000)
    assert (changed.spend_limit_micros, changed.spend_limit_period) == (500, "day")
    assert changed.revision > record.revision
    cleared = await keys.update_key(store, ADMIN, record.id, {"models": None, "tpm": None},
                                    now=NOW)
    assert (cleared.models, cleared.tpm, cleared.name) == (None, None, "b")
    revoked = await keys.revoke_key(store, ADMIN, record.id, now=NOW + 5)
    assert revoked.revoked_at == NOW + 5
    again = await keys.revoke_key(store, ADMIN, record.id, now=NOW + 9)
    assert again.revoked_at == NOW + 5
    before = await snapshot(store)
    with pytest.raises(InvalidRequest):
        await keys.update_key(store, ADMIN, record.id, {"name": "c"}, now=NOW)
    assert await snapshot(store) == before


@pytest.mark.parametrize(
    ("spent", "changes", "allowed"),
    [
        pytest.param((700, 0, 0), {"spend_limit_micros": 600}, False, id="total-below-used"),
        pytest.param((700, 0, 0), {"spend_limit_micros": 700}, True, id="total-equal-used"),
        pytest.param((900, 300, NOW - 60), {"spend_limit_micros": 200,
                     "spend_limit_period": "day"}, False, id="day-below-today"),
        pytest.param((900, 300, NOW - 2 * 86400), {"spend_limit_micros": 200,
                     "spend_limit_period": "day"}, True, id="day-spent-yesterday"),
        pytest.param((900, 300, NOW - 2 * 86400), {"spend_limit_micros": 200,
                     "spend_limit_period": "week"}, False, id="week-spent-this-week"),
        pytest.param((900, 300, NOW - 20 * 86400), {"spend_limit_micros": 200,
                     "spend_limit_period": "month"}, True, id="month-spent-last-month"),
    ],
)
async def test_a_cap_below_what_is_spent_is_refused(
    store: SqlStore, spent: tuple[int, int, int], changes: dict[str, Any], allowed: bool
) -> None:
    account = await _account(store)
    record, _ = await keys.create_key(store, ADMIN, account.id, {}, now=NOW)
    await _spend(store, record.id, *spent)
    before = await snapshot(store)
    if allowed:
        changed = await keys.update_key(store, ADMIN, record.id, changes, now=NOW)
        assert changed.spend_limit_micros == changes["spend_limit_micros"]
        return
    with pytest.raises(InvalidRequest) as raised:
        await keys.update_key(store, ADMIN, record.id, changes, now=NOW)
    assert raised.value.param == "spend_limit_usd"
    assert "already spent" in raised.value.message
    assert await snapshot(store) == before


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"models": ["gpt-9"]}, id="unknown-model"),
        pytest.param({"name": "k" * 201}, id="name-too-long"),
        pytest.param({"rpm": 0}, id="rpm-zero"),
        pytest.param({"expires_at": NOW - 1}, id="expired"),
        pytest.param({"spend_limit_micros": -1}, id="negative-cap"),
        pytest.param({"spend_limit_period": "year", "spend_limit_micros": 1}, id="bad-period"),
        pytest.param({"spend_limit_period": "day"}, id="period-without-cap"),
        pytest.param({"key_hash": "x"}, id="not-a-field"),
    ],
)
async def test_bad_keys_are_not_created(store: SqlStore, fields: dict[str, Any]) -> None:
    account = await _account(store)
    before = await snapshot(store)
    with pytest.raises(InvalidRequest):
        await keys.create_key(store, ADMIN, account.id, fields, known_models=MODELS, now=NOW)
    assert await snapshot(store) == before


async def test_unknown_or_suspended_accounts_get_no_keys(store: SqlStore) -> None:
    account = await _account(store)
    await accounts.update_account(store, ADMIN, account.id, {"status": "suspended"})
    before = await snapshot(store)
    with pytest.raises(InvalidRequest) as raised:
        await keys.create_key(store, ADMIN, account.id, {"name": "x"}, now=NOW)
    assert "suspended" in raised.value.message
    with pytest.raises(NotFound):
        await keys.create_key(store, ADMIN, "acct_missing", {"name": "x"}, now=NOW)
    with pytest.raises(NotFound):
        await keys.list_keys(store, ADMIN, "acct_missing", after=None, limit=10)
    with pytest.raises(NotFound):
        await keys.update_key(store, ADMIN, "key_missing", {"name": "x"}, now=NOW)
    with pytest.raises(NotFound):
        await keys.revoke_key(store, ADMIN, "key_missing", now=NOW)
    assert await snapshot(store) == before


async def test_a_member_reaching_for_another_accounts_keys_finds_nothing(
    store: SqlStore,
) -> None:
    mine = await _account(store, "Mine")
    theirs = await _account(store, "Theirs")
    their_key, _ = await keys.create_key(store, ADMIN, theirs.id, {"name": "theirs"}, now=NOW)
    me = member(mine.id)
    my_key, _ = await keys.create_key(store, me, mine.id, {"name": "mine"}, now=NOW)
    assert my_key.account_id == mine.id
    before = await snapshot(store)
    with pytest.raises(NotFound):
        await keys.create_key(store, me, theirs.id, {"name": "x"}, now=NOW)
    with pytest.raises(NotFound):
        await keys.list_keys(store, me, theirs.id, after=None, limit=10)
    with pytest.raises(NotFound):
        await keys.get_key(store, me, their_key.id)
    with pytest.raises(NotFound):
        await keys.update_key(store, me, their_key.id, {"rpm": 1}, now=NOW)
    with pytest.raises(NotFound):
        await keys.revoke_key(store, me, their_key.id, now=NOW)
    assert await snapshot(store) == before


def test_period_starts_are_utc_calendar_periods() -> None:
    assert keys.period_start("day", NOW) == 1_799_971_200  # 2027-01-15 00:00
    assert keys.period_start("week", NOW) == 1_799_971_200 - 4 * 86400  # Monday 01-11
    assert keys.period_start("month", NOW) == 1_799_971_200 - 14 * 86400  # 01-01
    assert keys.period_start("total", NOW) == 0


@pytest.mark.parametrize(
    ("changes", "period_used"),
    [
        pytest.param({"spend_limit_micros": 100_000}, 90_000, id="total-counts-the-lifetime"),
        pytest.param({"spend_limit_micros": 100_000, "spend_limit_period": "day"}, 30_000,
                     id="day-counts-today"),
    ],
)
async def test_a_new_cap_starts_from_what_the_key_already_spent(
    store: SqlStore, changes: dict[str, Any], period_used: int
) -> None:
    """A cap set on a key that had none (a migrated key's period figures are 0) counts what
    the key spent in its period from the ledger, so the gates do not start it at zero."""
    account = await _account(store)
    record, _ = await keys.create_key(store, ADMIN, account.id, {}, now=NOW)
    await _spend(store, record.id, 90_000, 30_000, NOW - 60)
    async with store.engine.begin() as conn:  # as migration 3 left an old key
        await conn.execute(update(api_keys).where(api_keys.c.id == record.id)
                           .values(period_used_micros=0, period_start=0))
    changed = await keys.update_key(store, ADMIN, record.id, changes, now=NOW)
    assert changed.period_used_micros == period_used


async def test_an_account_holds_at_most_max_keys_revoked_ones_aside(store: SqlStore) -> None:
    account = await _account(store)
    other = await _account(store, "Other")
    made = [await keys.create_key(store, ADMIN, account.id, {}, max_keys=3) for _ in range(3)]
    before = await snapshot(store)
    with pytest.raises(Conflict, match="max_keys_per_account = 3") as refused:
        await keys.create_key(store, member(account.id), account.id, {"name": "4th"}, max_keys=3)
    assert refused.value.status == 409
    assert await snapshot(store) == before  # no key, no audit entry
    await keys.create_key(store, ADMIN, other.id, {}, max_keys=3)  # another account's count
    await keys.revoke_key(store, ADMIN, made[0][0].id)
    await keys.create_key(store, ADMIN, account.id, {}, max_keys=3)  # a revoked key is none


async def test_keys_created_at_once_never_pass_max_keys(store: SqlStore) -> None:
    account = await _account(store)
    results = await asyncio.gather(
        *(keys.create_key(store, ADMIN, account.id, {}, max_keys=4) for _ in range(12)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 4
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
    rows, _ = await keys.list_keys(store, ADMIN, account.id, after=None, limit=50)
    assert len(rows) == 4


def test_max_keys_defaults_to_100() -> None:
    assert keys.MAX_KEYS_PER_ACCOUNT == 100
    assert Settings().max_keys_per_account == keys.MAX_KEYS_PER_ACCOUNT
