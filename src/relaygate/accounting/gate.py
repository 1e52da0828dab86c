"""The admission gate: a key's rate limits and its credit reservation, decided as one step.

Two implementations share this interface:

- :class:`MemoryGate` (the embedded default): limits and balances held in this process; each
  decision is synchronous, so atomic within the event loop.
- :class:`relaygate.accounting.redis_gate.RedisGate` (``redis_url``): one Lua script per
  admission and one per settlement, so every replica and worker shares the same limits and
  balances.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from relaygate.accounting.credits import MemoryCreditBook, Reservation
from relaygate.limits.memory import MemoryLimiter, Permit
from relaygate.store.records import KeyRecord, LedgerRow


class Unaffordable(Exception):
    """The key's available credits cannot cover the reservation."""

    def __init__(self, available: int) -> None:
        super().__init__(available)
        self.available = available


@dataclass(slots=True)
class Hold:
    """What an admitted request holds until it is settled or cancelled."""

    key_id: str
    request_id: str
    amount: int
    """Reserved micro-USD."""
    tokens: int
    """Tokens admitted against the TPM limit."""
    started: float = 0.0
    """When it was admitted (monotonic seconds)."""
    permit: Permit | None = None
    reservation: Reservation | None = None


@dataclass(slots=True)
class Balance:
    granted: int
    used: int
    unlimited: bool


class Gate:
    """The interface every admission backend implements."""

    description = ""

    async def admit(self, key: KeyRecord, tokens: int, amount: int, request_id: str) -> Hold:
        """Take a rate-limit slot and reserve ``amount`` micro-USD, or take nothing and raise
        :class:`relaygate.errors.RateLimited`, :class:`Unaffordable` or
        :class:`relaygate.errors.ServiceUnavailable`."""
        raise NotImplementedError

    async def cancel(self, hold: Hold) -> None:
        """Undo an admission whose request never reached an upstream."""
        raise NotImplementedError

    async def settle(self, hold: Hold, cost: int, tokens: int) -> int:
        """Charge ``cost`` (clamped so the balance stays ≥ 0), release the rest and the slot,
        count ``tokens`` against TPM; returns the charge."""
        raise NotImplementedError

    async def balance(self, key: KeyRecord) -> Balance:
        raise NotImplementedError

    def key_changed(self, record: KeyRecord) -> None:
        """A key was created or changed in the store (credits granted, revoked, ...)."""

    async def ledger_written(self, rows: Sequence[LedgerRow]) -> None:
        """These rows are now in the store (their cost is in the key's ``used_micros``)."""

    async def close(self) -> None:
        """Release connections."""


class MemoryGate(Gate):
    """Limits and balances in this process: correct for one process, the embedded default."""

    description = "in-process"

    def __init__(self) -> None:
        self.limiter = MemoryLimiter()
        self.credits = MemoryCreditBook()

    def key_changed(self, record: KeyRecord) -> None:
        self.credits.load(record.id, record.granted_micros, record.used_micros, record.unlimited)

    async def admit(self, key: KeyRecord, tokens: int, amount: int, request_id: str) -> Hold:
        permit = self.limiter.acquire(key, tokens)
        reservation = self.credits.reserve(key.id, amount)
        if not isinstance(reservation, Reservation):
            self.limiter.cancel(permit)
            raise Unaffordable(reservation)
        return Hold(key.id, request_id, amount, tokens, permit=permit, reservation=reservation)

    async def cancel(self, hold: Hold) -> None:
        assert hold.permit is not None
        assert hold.reservation is not None
        self.limiter.cancel(hold.permit)
        self.credits.settle(hold.reservation, 0)

    async def settle(self, hold: Hold, cost: int, tokens: int) -> int:
        assert hold.permit is not None
        assert hold.reservation is not None
        self.limiter.release(hold.permit, tokens)
        return self.credits.settle(hold.reservation, cost)

    async def balance(self, key: KeyRecord) -> Balance:
        account = self.credits.balance(key.id)
        if account is None:
            return Balance(key.granted_micros, key.used_micros, key.unlimited)
        return Balance(account.granted, account.used, account.unlimited)
