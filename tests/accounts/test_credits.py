"""Top-ups and redemption codes at the business layer, on SQLite and PostgreSQL, with the
concurrency that must add credits exactly once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import update

from relaygate.accounts import accounts, codes, credits
from relaygate.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from relaygate.store import admin_sql
from relaygate.store.schema import accounts as accounts_table
from relaygate.store.sql import SqlStore
from tests.accounts.conftest import ADMIN, member, snapshot
from tests.store.test_store import Backend

NOW = 1_800_000_000


async def _balance(store: SqlStore, account_id: str) -> tuple[int, int]:
    account = await admin_sql.get_account(store, account_id)
    assert account is not None
    return account.granted_micros, account.used_micros


async def _use(store: SqlStore, account_id: str, micros: int) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            update(accounts_table)
            .where(accounts_table.c.id == account_id)
            .values(used_micros=micros)
        )


async def test_grants_add_and_negative_grants_adjust_down_to_what_is_used(
    store: SqlStore,
) -> None:
    account = await accounts.create_account(store, ADMIN, name="Acme", credits_micros=1_000_000)
    grant, replayed = await credits.add_credits(store, ADMIN, account.id, 2_500_000, note="top-up")
    assert not replayed
    assert (grant.granted_after, grant.used_after, grant.note) == (3_500_000, 0, "top-up")
    await _use(store, account.id, 3_000_000)
    before = await snapshot(store)
    with pytest.raises(InvalidRequest) as raised:
        await credits.add_credits(store, ADMIN, account.id, -600_000)
    assert raised.value.param == "amount_usd"
    assert await snapshot(store) == before
    grant, _ = await credits.add_credits(store, ADMIN, account.id, -500_000)
    assert await _balance(store, account.id) == (3_000_000, 3_000_000)
    # an account that used more than it was granted can still be topped up
    await _use(store, account.id, 4_000_000)
    grant, _ = await credits.add_credits(store, ADMIN, account.id, 500_000)
    assert await _balance(store, account.id) == (3_500_000, 4_000_000)
    changed = await admin_sql.get_account(store, account.id)
    assert changed is not None
    assert changed.revision > account.revision


async def test_bad_grants_change_nothing(store: SqlStore) -> None:
    account = await accounts.create_account(store, ADMIN, name="Acme", credits_micros=1_000_000)
    other = await accounts.create_account(store, ADMIN, name="Other")
    before = await snapshot(store)
    with pytest.raises(NotFound):
        await credits.add_credits(store, ADMIN, "acct_missing", 1_000_000)
    with pytest.raises(InvalidRequest):
        await credits.add_credits(store, ADMIN, account.id, 0)
    with pytest.raises(InvalidRequest):
        await credits.add_credits(store, ADMIN, account.id, 1, note="n" * 501)
    with pytest.raises(InvalidRequest):
        await credits.add_credits(store, ADMIN, account.id, 1, idempotency_key="k" * 201)
    # a member cannot grant itself credits, and another account is a 404 to it
    with pytest.raises(PermissionDenied):
        await credits.add_credits(store, member(account.id), account.id, 1_000_000)
    with pytest.raises(NotFound):
        await credits.add_credits(store, member(account.id), other.id, 1_000_000)
    assert await snapshot(store) == before


async def test_an_idempotency_key_adds_once_and_answers_the_same(store: SqlStore) -> None:
    account = await accounts.create_account(store, ADMIN, name="Acme")
    first, replayed = await credits.add_credits(store, ADMIN, account.id, 1_000_000,
                                                idempotency_key="topup-1")
    assert not replayed
    again, replayed = await credits.add_credits(store, ADMIN, account.id, 1_000_000,
                                                idempotency_key="topup-1")
    assert replayed
    assert again == first
    assert await _balance(store, account.id) == (1_000_000, 0)
    before = await snapshot(store)
    with pytest.raises(Conflict):
        await credits.add_credits(store, ADMIN, account.id, 2_000_000, idempotency_key="topup-1")
    assert await snapshot(store) == before


async def test_one_idempotency_key_sent_20_times_at_once_adds_once(backend: Backend) -> None:
    stores = [backend.open() for _ in range(4)]  # four processes, say
    await stores[0].upgrade()
    account = await accounts.create_account(stores[0], ADMIN, name="Acme")
    results = await asyncio.gather(
        *(
            credits.add_credits(stores[n % 4], ADMIN, account.id, 1_500_000,
                                idempotency_key="same-key")
            for n in range(20)
        )
    )
    assert len({grant.id for grant, _ in results}) == 1
    assert sorted(replayed for _, replayed in results) == [False] + [True] * 19
    assert {(g.granted_after, g.amount_micros) for g, _ in results} == {(1_500_000, 1_500_000)}
    assert await _balance(stores[0], account.id) == (1_500_000, 0)
    grants = await admin_sql.list_grants(stores[0], account.id)
    assert len(grants) == 1
    entries = await admin_sql.list_audit(stores[0], account_id=account.id, before=None, limit=50)
    assert [e.action for e in entries].count("credits.add") == 1


# --- redemption codes ------------------------------------------------------------------------


async def test_a_code_credits_once(store: SqlStore) -> None:
    account = await accounts.create_account(store, ADMIN, name="Acme")
    made = await codes.create_codes(store, ADMIN, count=3, amount_micros=2_000_000, now=NOW)
    assert len({code for _, code in made}) == 3
    listed, _ = await codes.list_codes(store, ADMIN, after=None, limit=10)
    assert {c.id for c in listed} == {record.id for record, _ in made}
    stored = str(await snapshot(store))
    assert not any(code in stored for _, code in made)
    record, code = made[0]
    grant = await codes.redeem(store, member(account.id), account.id, code)
    assert (grant.amount_micros, grant.source, grant.granted_after) == (2_000_000, "code",
                                                                        2_000_000)
    before = await snapshot(store)
    with pytest.raises(Conflict):
        await codes.redeem(store, ADMIN, account.id, code)
    assert await snapshot(store) == before
    (redeemed,) = [c for c in (await codes.list_codes(store, ADMIN, after=None, limit=10))[0]
                   if c.id == record.id]
    assert redeemed.account_id == account.id


async def test_unusable_codes_and_accounts_change_nothing(store: SqlStore) -> None:
    account = await accounts.create_account(store, ADMIN, name="Acme")
    suspended = await accounts.create_account(store, ADMIN, name="Suspended")
    await accounts.update_account(store, ADMIN, suspended.id, {"status": "suspended"})
    now = 1_700_000_000
    (_, expiring), = await codes.create_codes(store, ADMIN, count=1, amount_micros=1,
                                              expires_at=now + 10, now=now)
    (_, good), = await codes.create_codes(store, ADMIN, count=1, amount_micros=1)
    before = await snapshot(store)
    with pytest.raises(InvalidRequest) as raised:
        await codes.redeem(store, ADMIN, account.id, expiring, now=now + 10)
    assert "expired" in raised.value.message
    with pytest.raises(NotFound):
        await codes.redeem(store, ADMIN, account.id, "rgc-not-a-code")
    with pytest.raises(InvalidRequest):
        await codes.redeem(store, ADMIN, account.id, "x" * 101)
    with pytest.raises(InvalidRequest):
        await codes.redeem(store, ADMIN, suspended.id, good)
    with pytest.raises(NotFound):
        await codes.redeem(store, ADMIN, "acct_missing", good)
    with pytest.raises(NotFound):
        await codes.redeem(store, member(suspended.id), account.id, good)
    assert await snapshot(store) == before


@pytest.mark.parametrize(
    ("count", "amount", "expires_at"),
    [
        pytest.param(0, 1, None, id="no-codes"),
        pytest.param(1001, 1, None, id="too-many"),
        pytest.param(1, 0, None, id="worth-nothing"),
        pytest.param(1, -5, None, id="negative"),
        pytest.param(1, 1, NOW - 1, id="already-expired"),
    ],
)
async def test_bad_code_batches_are_not_created(
    store: SqlStore, count: int, amount: int, expires_at: int | None
) -> None:
    before = await snapshot(store)
    with pytest.raises(InvalidRequest):
        await codes.create_codes(store, ADMIN, count=count, amount_micros=amount,
                                 expires_at=expires_at, now=NOW)
    with pytest.raises(PermissionDenied):
        await codes.create_codes(store, member("acct_x"), count=1, amount_micros=1)
    assert await snapshot(store) == before


async def test_50_concurrent_redemptions_of_one_code_credit_it_once(backend: Backend) -> None:
    stores = [backend.open() for _ in range(5)]
    await stores[0].upgrade()
    accounts_made = [
        await accounts.create_account(stores[0], ADMIN, name=f"A{n}") for n in range(5)
    ]
    (_, code), = await codes.create_codes(stores[0], ADMIN, count=1, amount_micros=7_000_000)

    async def attempt(n: int) -> object:
        account = accounts_made[n % 5]
        try:
            return await codes.redeem(stores[n % 5], ADMIN, account.id, code)
        except Conflict as refused:
            return refused

    results = await asyncio.gather(*(attempt(n) for n in range(50)))
    won = [r for r in results if isinstance(r, admin_sql.GrantRecord)]
    assert len(won) == 1
    assert all(isinstance(r, Conflict) for r in results if r is not won[0])
    granted = [(await _balance(stores[0], a.id))[0] for a in accounts_made]
    assert sorted(granted) == [0, 0, 0, 0, 7_000_000]
    entries = await admin_sql.list_audit(stores[0], account_id=None, before=None, limit=200)
    assert [e.action for e in entries].count("code.redeem") == 1
