"""Credit reservation and settlement.

Admission reserves a request's worst-case cost atomically; settlement charges the actual cost
and releases the rest. :class:`MemoryCreditBook` is the embedded default: one process owns the
balances (loaded from the store, persisted through the ledger), and because the event loop runs
one admission at a time, check-and-reserve is a single atomic step.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Account:
    """A key's money, in micro-USD."""

    granted: int
    used: int
    unlimited: bool = False
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.granted - self.used - self.reserved


@dataclass(slots=True)
class Reservation:
    key_id: str
    amount: int


class CreditBook:
    """The interface every credit backend implements."""

    def reserve(self, key_id: str, amount: int) -> Reservation | int:
        """Reserve ``amount``; on failure return what is available instead."""
        raise NotImplementedError

    def settle(self, reservation: Reservation, cost: int) -> int:
        """Charge ``cost`` against ``reservation`` and release the rest; returns the charge."""
        raise NotImplementedError

    def balance(self, key_id: str) -> Account | None:
        raise NotImplementedError


class MemoryCreditBook(CreditBook):
    """Balances held in this process (the single-process default)."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.shortfall_micros = 0
        """Cost that could not be charged because it exceeded reservation plus balance."""

    def load(self, key_id: str, granted: int, used: int, unlimited: bool) -> None:
        """Take a key's balance from the store (start-up, or a change made elsewhere).

        ``used`` is only taken the first time: afterwards this process is its only writer and
        its own figure includes charges the ledger has not flushed yet.
        """
        account = self.accounts.get(key_id)
        if account is None:
            self.accounts[key_id] = Account(granted=granted, used=used, unlimited=unlimited)
        else:
            account.granted = granted
            account.unlimited = unlimited

    def reserve(self, key_id: str, amount: int) -> Reservation | int:
        account = self.accounts[key_id]
        if not account.unlimited and account.available < amount:
            return max(0, account.available)
        account.reserved += amount
        return Reservation(key_id, amount)

    def settle(self, reservation: Reservation, cost: int) -> int:
        account = self.accounts[reservation.key_id]
        account.reserved -= reservation.amount
        charge = cost
        if not account.unlimited:
            # The reservation is a bound, so this only bites on an upstream that reports more
            # than it was allowed to produce: the balance still never goes below zero.
            charge = max(0, min(cost, account.granted - account.used - account.reserved))
            self.shortfall_micros += cost - charge
        account.used += charge
        return charge

    def balance(self, key_id: str) -> Account | None:
        return self.accounts.get(key_id)
