"""A key's cap or its account's credits changed while requests are in flight (the in-process
gate): the reservations in flight release into the cap they were taken from, and what was
reserved is always chargeable."""

from __future__ import annotations

from dataclasses import replace

from relaygate.accounting.gate import MemoryGate
from relaygate.store.records import AccountRecord, KeyRecord

ACCOUNT = AccountRecord(id="acct_a", name="a", created_at=0, granted_micros=10**9)
KEY = KeyRecord(id="key_1", name="", key_hash="h", prefix="p", created_at=0,
                account_id="acct_a", spend_limit_micros=10_000, spend_limit_period="day",
                revision=1)


def gate_with(account: AccountRecord = ACCOUNT, key: KeyRecord = KEY) -> MemoryGate:
    gate = MemoryGate()
    gate.account_changed(account)
    gate.accounts = {account.id: account}.get
    gate.key_changed(key)
    return gate


async def test_a_period_change_in_flight_leaves_no_reservation_behind() -> None:
    gate = gate_with()
    hold = await gate.admit(KEY, 1, 6_000, "r1")
    monthly = replace(KEY, spend_limit_period="month", revision=2)
    gate.key_changed(monthly)
    assert await gate.settle(hold, 100, 1) == 100
    cap = gate.credits.caps[KEY.id]
    assert (cap.reserved, cap.used, cap.period) == (0, 100, "month")
    await gate.admit(monthly, 1, 9_900, "r2")  # all that is left of the month's cap


async def test_what_was_reserved_is_charged_when_credits_are_taken_back_meanwhile() -> None:
    account = replace(ACCOUNT, granted_micros=10_000)
    key = replace(KEY, spend_limit_micros=None, spend_limit_period=None)
    gate = gate_with(account, key)
    hold = await gate.admit(key, 1, 5_000, "r1")
    gate.account_changed(replace(account, granted_micros=0, revision=2))
    assert await gate.settle(hold, 4_000, 1) == 4_000  # not 0: it was reserved
    assert gate.credits.shortfall_micros == 0
    # beyond its reservation, a report is still bounded by what is left (here nothing)
    gate.account_changed(replace(account, granted_micros=10_000, revision=3))
    hold = await gate.admit(key, 1, 1_000, "r2")
    gate.account_changed(replace(account, granted_micros=4_000, revision=4))
    assert await gate.settle(hold, 3_000, 1) == 1_000
