"""Accounts at the business layer, on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import update

from relaygate.accounts import accounts, audit, codes, keys
from relaygate.errors import InvalidRequest, NotFound, PermissionDenied
from relaygate.store import admin_sql, schema
from relaygate.store.sql import SqlStore
from tests.accounts.conftest import ADMIN, member, snapshot


async def test_create_records_the_initial_grant_and_an_audit_entry(store: SqlStore) -> None:
    created = await accounts.create_account(store, ADMIN, name="Acme", credits_micros=5_000_000)
    assert created.id.startswith("acct_")
    assert (created.name, created.status, created.granted_micros) == ("Acme", "active", 5_000_000)
    assert created.revision > 0
    assert await accounts.get_account(store, ADMIN, created.id) == created
    (grant,) = await admin_sql.list_grants(store, created.id)
    assert (grant.amount_micros, grant.actor, grant.granted_after) == (5_000_000, ADMIN.actor,
                                                                       5_000_000)
    entries, more = await audit.read(store, ADMIN, before=None, limit=10)
    assert not more
    assert [(e.action, e.target_id, e.actor, e.address) for e in entries] == [
        ("account.create", created.id, "admin_token:atk_test", "127.0.0.1")
    ]


async def test_list_pages_newest_first_and_searches_names_and_ids(store: SqlStore) -> None:
    made = []
    for n in range(5):
        made.append(await accounts.create_account(store, ADMIN, name=f"Team {n} 50%_off",
                                                  now=1_800_000_000 + n // 2))
    seen: list[str] = []
    after = None
    while True:
        rows, more = await accounts.list_accounts(store, ADMIN, q=None, after=after, limit=2)
        seen += [a.id for a in rows]
        if not more:
            break
        after = (rows[-1].created_at, rows[-1].id)
    expected = sorted(made, key=lambda a: (a.created_at, a.id), reverse=True)
    assert seen == [a.id for a in expected]
    rows, _ = await accounts.list_accounts(store, ADMIN, q="team 3", after=None, limit=10)
    assert [a.name for a in rows] == ["Team 3 50%_off"]
    rows, _ = await accounts.list_accounts(store, ADMIN, q=made[1].id, after=None, limit=10)
    assert [a.id for a in rows] == [made[1].id]
    # LIKE's wildcards are matched as themselves
    rows, _ = await accounts.list_accounts(store, ADMIN, q="%", after=None, limit=10)
    assert len(rows) == 5
    rows, _ = await accounts.list_accounts(store, ADMIN, q="0%_o", after=None, limit=10)
    assert len(rows) == 5
    rows, _ = await accounts.list_accounts(store, ADMIN, q="x%", after=None, limit=10)
    assert rows == []


async def test_patch_changes_only_what_is_given_and_bumps_the_revision(store: SqlStore) -> None:
    created = await accounts.create_account(store, ADMIN, name="Acme")
    changed = await accounts.update_account(
        store, ADMIN, created.id, {"status": "suspended", "rpm": 60, "low_balance_micros": 10}
    )
    assert (changed.status, changed.rpm, changed.tpm, changed.low_balance_micros) == (
        "suspended", 60, None, 10)
    assert changed.name == "Acme"
    assert changed.revision > created.revision
    cleared = await accounts.update_account(store, ADMIN, created.id, {"rpm": None})
    assert cleared.rpm is None
    assert cleared.status == "suspended"


async def test_a_member_sees_only_its_own_account(store: SqlStore) -> None:
    mine = await accounts.create_account(store, ADMIN, name="Mine")
    theirs = await accounts.create_account(store, ADMIN, name="Theirs")
    me = member(mine.id)
    rows, _ = await accounts.list_accounts(store, me, q=None, after=None, limit=10)
    assert [a.id for a in rows] == [mine.id]
    assert (await accounts.get_account(store, me, mine.id)).id == mine.id
    before = await snapshot(store)
    with pytest.raises(NotFound):
        await accounts.get_account(store, me, theirs.id)
    with pytest.raises(NotFound):
        await accounts.update_account(store, me, theirs.id, {"name": "Mine now"})
    # on its own account, a member may rename it, but not lift its own suspension or limits
    with pytest.raises(PermissionDenied):
        await accounts.update_account(store, me, mine.id, {"status": "active"})
    with pytest.raises(PermissionDenied):
        await accounts.update_account(store, me, mine.id, {"rpm": 10_000})
    with pytest.raises(PermissionDenied):
        await accounts.create_account(store, me, name="Another")
    assert await snapshot(store) == before
    renamed = await accounts.update_account(store, me, mine.id, {"name": "Ours"})
    assert renamed.name == "Ours"


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        pytest.param({"name": "x" * 201}, "name", id="name-too-long"),
        pytest.param({"name": "   "}, "name", id="name-blank"),
        pytest.param({"name": "a\x00b"}, "name", id="name-control"),
        pytest.param({"status": "deleted"}, "status", id="unknown-status"),
        pytest.param({"rpm": 0}, "rpm", id="rpm-zero"),
        pytest.param({"tpm": 10**12}, "tpm", id="tpm-huge"),
        pytest.param({"low_balance_micros": -1}, "low_balance_micros", id="threshold-negative"),
        pytest.param({"granted_micros": 10**9}, "granted_micros", id="not-a-field"),
    ],
)
async def test_bad_patches_change_nothing(
    store: SqlStore, changes: dict[str, Any], param: str
) -> None:
    created = await accounts.create_account(store, ADMIN, name="Acme")
    before = await snapshot(store)
    with pytest.raises(InvalidRequest) as raised:
        await accounts.update_account(store, ADMIN, created.id, changes)
    assert raised.value.param == param
    assert await snapshot(store) == before


async def test_unknown_accounts_and_oversized_names_change_nothing(store: SqlStore) -> None:
    before = await snapshot(store)
    with pytest.raises(NotFound):
        await accounts.update_account(store, ADMIN, "acct_missing", {"name": "x"})
    with pytest.raises(NotFound):
        await accounts.get_account(store, ADMIN, "acct_missing")
    with pytest.raises(InvalidRequest):
        await accounts.create_account(store, ADMIN, name="n" * 201)
    with pytest.raises(InvalidRequest):
        await accounts.create_account(store, ADMIN, name="")
    assert await snapshot(store) == before


@pytest.mark.parametrize(
    ("value", "allowed", "expected"),
    [
        pytest.param(Decimal("12.5"), {}, 12_500_000, id="decimal"),
        pytest.param(Decimal("0.000001"), {}, 1, id="one-micro"),
        pytest.param(Decimal("-3"), {"negative": True}, -3_000_000, id="negative-allowed"),
        pytest.param(Decimal("1E+3"), {}, 1_000_000_000, id="exponent"),
    ],
)
def test_usd_amounts_convert_exactly(value: Decimal, allowed: dict[str, bool], expected: int
                                     ) -> None:
    assert accounts.usd_micros(value, "amount_usd", **allowed) == expected


@pytest.mark.parametrize(
    ("value", "allowed"),
    [
        pytest.param(Decimal("NaN"), {}, id="nan"),
        pytest.param(Decimal("Infinity"), {}, id="infinity"),
        pytest.param(Decimal("0.0000001"), {}, id="finer-than-a-micro"),
        pytest.param(Decimal("-1"), {}, id="negative"),
        pytest.param(Decimal("0"), {"zero": False}, id="zero"),
        pytest.param(Decimal("1000000000.01"), {}, id="absurd"),
        pytest.param(Decimal("1E+30"), {"negative": True}, id="absurd-exponent"),
    ],
)
def test_bad_usd_amounts_are_refused(value: Decimal, allowed: dict[str, bool]) -> None:
    with pytest.raises(InvalidRequest) as raised:
        accounts.usd_micros(value, "amount_usd", **allowed)
    assert raised.value.param == "amount_usd"


async def test_setting_a_threshold_leaves_the_alert_state_to_the_detector(
    store: SqlStore,
) -> None:
    """A PATCH of the threshold (the same or another) does not re-arm the alert: anyone who may
    set it could otherwise send the operator an alert at will. The detector re-arms an account
    whose balance is back above its threshold."""
    created = await accounts.create_account(store, ADMIN, name="Acme")
    await accounts.update_account(store, ADMIN, created.id, {"low_balance_micros": 5})
    async with store.engine.begin() as conn:
        await conn.execute(update(schema.accounts).values(low_balance_alerted=True))
    for threshold in (5, 6, 5):
        changed = await accounts.update_account(
            store, member(created.id), created.id, {"low_balance_micros": threshold}
        )
        assert changed.low_balance_alerted is True


async def test_a_member_of_a_suspended_account_reads_but_changes_nothing(
    store: SqlStore,
) -> None:
    account = await accounts.create_account(store, ADMIN, name="Acme", credits_micros=1000)
    key, _ = await keys.create_key(store, ADMIN, account.id, {"spend_limit_micros": 500})
    [(_, code)] = await codes.create_codes(store, ADMIN, count=1, amount_micros=100)
    await accounts.update_account(store, ADMIN, account.id, {"status": "suspended"})
    owner = member(account.id)
    before = await snapshot(store)
    writes = [
        lambda: keys.update_key(store, owner, key.id, {"spend_limit_micros": None}),
        lambda: keys.revoke_key(store, owner, key.id),
        lambda: keys.create_key(store, owner, account.id, {}),
        lambda: codes.redeem(store, owner, account.id, code),
        lambda: accounts.update_account(store, owner, account.id, {"name": "x"}),
    ]
    for write in writes:
        with pytest.raises(PermissionDenied, match="suspended"):
            await write()
    assert await snapshot(store) == before  # nothing changed, nothing audited
    # reads still answer
    assert (await accounts.get_account(store, owner, account.id)).status == "suspended"
    assert (await keys.get_key(store, owner, key.id)).spend_limit_micros == 500
    rows, _ = await audit.read(store, owner, before=None, limit=10)
    assert rows
    # an admin is unaffected
    changed = await keys.update_key(store, ADMIN, key.id, {"name": "by the operator"})
    assert changed.name == "by the operator"
