"""Credit reservation and settlement.

Admission reserves a request's worst-case cost atomically against two bounds at once: the
balance of the key's account and, when the key has one, the key's spend cap over its current
period. Settlement charges the actual cost to both and releases the rest.
:class:`MemoryCreditBook` is the embedded default: one process owns the balances (loaded from
the store, persisted through the ledger), and because the event loop runs one admission at a
time, check-and-reserve is a single atomic step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from relaygate.store.periods import period_start
from relaygate.store.records import KeyRecord


@dataclass(slots=True)
class Account:
    """An account's money (the balance its keys spend), in micro-USD."""

    granted: int
    used: int
    unlimited: bool = False
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.granted - self.used - self.reserved


@dataclass(slots=True)
class Cap:
    """A key's spend cap: ``limit`` over the period that began at ``start`` (see
    :mod:`relaygate.store.periods`), of which ``used`` is spent and ``reserved`` held."""

    limit: int
    period: str | None
    used: int = 0
    start: int = 0
    reserved: int = 0

    def roll(self, now: float) -> None:
        """Start the current period afresh if ``start`` is an earlier one."""
        start = period_start(self.period, now)
        if start != self.start:
            self.start, self.used = start, 0

    @property
    def available(self) -> int:
        return self.limit - self.used - self.reserved


@dataclass(slots=True)
class Reservation:
    account_id: str
    amount: int
    cap: Cap | None = None
    """The key's cap it is also held against."""


class CreditBook:
    """The interface every credit backend implements."""

    def reserve(self, account_id: str, amount: int, cap: Cap | None = None) -> Reservation | int:
        """Reserve ``amount`` against the account and ``cap``; on failure return what is
        available instead (the smaller of the two)."""
        raise NotImplementedError

    def settle(self, reservation: Reservation, cost: int) -> int:
        """Charge ``cost`` against ``reservation`` and release the rest; returns the charge."""
        raise NotImplementedError

    def balance(self, account_id: str) -> Account | None:
        raise NotImplementedError


class MemoryCreditBook(CreditBook):
    """Balances held in this process (the single-process default)."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.caps: dict[str, Cap] = {}
        """Spend caps by key id (keys without one are absent)."""
        self.shortfall_micros = 0
        """Cost that could not be charged because it exceeded reservation plus balance."""

    def load(self, account_id: str, granted: int, used: int, unlimited: bool) -> None:
        """Take an account's balance from the store (start-up, or a change made elsewhere).

        ``used`` is only taken the first time: afterwards this process is its only writer and
        its own figure includes charges the ledger has not flushed yet.
        """
        account = self.accounts.get(account_id)
        if account is None:
            self.accounts[account_id] = Account(granted=granted, used=used, unlimited=unlimited)
        else:
            account.granted = granted
            account.unlimited = unlimited

    def load_cap(self, record: KeyRecord) -> None:
        """Take a key's spend cap from the store. Its use in the period is taken the first
        time (and when the period kind changes); afterwards this process counts it."""
        if record.spend_limit_micros is None:
            self.caps.pop(record.id, None)
            return
        cap = self.caps.get(record.id)
        if cap is None:
            self.caps[record.id] = Cap(
                record.spend_limit_micros,
                record.spend_limit_period,
                record.period_used_micros,
                record.period_start,
            )
            return
        # Changed in place: the reservations in flight hold this object and release into it.
        if cap.period != record.spend_limit_period:
            cap.period = record.spend_limit_period
            cap.used = record.period_used_micros
            cap.start = record.period_start
        cap.limit = record.spend_limit_micros

    def reserve(
        self, account_id: str, amount: int, cap: Cap | None = None, now: float | None = None
    ) -> Reservation | int:
        account = self.accounts[account_id]
        available = None if account.unlimited else account.available
        if cap is not None:
            cap.roll(time.time() if now is None else now)
            available = cap.available if available is None else min(available, cap.available)
        if available is not None and available < amount:
            return max(0, available)
        account.reserved += amount
        if cap is not None:
            cap.reserved += amount
        return Reservation(account_id, amount, cap)

    def settle(self, reservation: Reservation, cost: int, now: float | None = None) -> int:
        account = self.accounts[reservation.account_id]
        cap = reservation.cap
        account.reserved -= reservation.amount
        room = None if account.unlimited else account.granted - account.used - account.reserved
        if cap is not None:
            cap.reserved -= reservation.amount
            cap.roll(time.time() if now is None else now)
            room = cap.available if room is None else min(room, cap.available)
        charge = cost
        if room is not None:
            # The reservation is a bound, so this only bites on an upstream that reports more
            # than it was allowed to produce: neither the balance nor the cap goes below zero.
            # What was reserved is always chargeable, also when credits were taken back or the
            # cap lowered while the request ran (the balance may then end below zero by at
            # most what was in flight).
            charge = max(0, min(cost, max(room, reservation.amount)))
            self.shortfall_micros += cost - charge
        account.used += charge
        if cap is not None:
            cap.used += charge
        return charge

    def balance(self, account_id: str) -> Account | None:
        return self.accounts.get(account_id)
