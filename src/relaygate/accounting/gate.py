"""The admission gate: a key's rate limits and its credit reservation, decided as one step.

Two implementations share this interface:

- :class:`MemoryGate` (the embedded default): limits and balances held in this process; each
  decision is synchronous, so atomic within the event loop.
- :class:`relaygate.accounting.redis_gate.RedisGate` (``redis_url``): one Lua script per
  admission and one per settlement, so every replica and worker shares the same limits and
  balances.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relaygate.accounting.credits import MemoryCreditBook, Reservation
from relaygate.limits.memory import MemoryLimiter, Permit
from relaygate.store.records import AccountRecord, KeyRecord, LedgerRow

ACCOUNT = "key's account"
"""How a refusal names an account's limit ("this key's account allows ...")."""


def account_of(key: KeyRecord) -> str:
    """The id of the balance a key spends: its account's (a key from before accounts, as in
    some unit tests, spends a balance of its own under its own id)."""
    return key.account_id or key.id


class Unaffordable(Exception):
    """What the key can spend (its account's balance, bounded by the key's spend cap) cannot
    cover the reservation."""

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
    account_permit: Permit | None = None
    """The account's rate-limit slot (when the account has limits)."""
    account_id: str = ""


@dataclass(slots=True)
class Balance:
    """What ``GET /v1/credits`` reports: the account's balance and the key's cap."""

    granted: int
    used: int
    unlimited: bool
    cap_remaining: int | None = None
    """What is left of the key's spend cap in its current period (``None``: no cap)."""

    @property
    def remaining(self) -> int:
        """What the key can still spend: the smaller of the account's balance and the cap's
        remainder (an unlimited account with no cap: 0, reported as unlimited)."""
        left = None if self.unlimited else max(0, self.granted - self.used)
        if self.cap_remaining is not None:
            cap = max(0, self.cap_remaining)
            left = cap if left is None else min(left, cap)
        return 0 if left is None else left

    @property
    def is_unlimited(self) -> bool:
        return self.unlimited and self.cap_remaining is None


def _no_account(account_id: str) -> AccountRecord | None:
    return None


class Gate:
    """The interface every admission backend implements."""

    description = ""

    def __init__(self) -> None:
        self.accounts: Callable[[str], AccountRecord | None] = _no_account
        """Looks an account up in the key cache (set by the app): its limits apply."""

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
        """A key was created or changed in the store (its cap, revoked, ...)."""

    def account_changed(self, record: AccountRecord) -> None:
        """An account was created or changed in the store (credits granted, limits, ...)."""

    async def ledger_written(self, rows: Sequence[LedgerRow]) -> None:
        """These rows are now in the store (their cost is in the key's ``used_micros``)."""

    async def close(self) -> None:
        """Release connections."""


class MemoryGate(Gate):
    """Limits and balances in this process: correct for one process, the embedded default."""

    description = "in-process"

    def __init__(self) -> None:
        super().__init__()
        self.limiter = MemoryLimiter()
        self.credits = MemoryCreditBook()

    def key_changed(self, record: KeyRecord) -> None:
        if not record.account_id:
            self.credits.load(
                record.id, record.granted_micros, record.used_micros, record.unlimited
            )
        self.credits.load_cap(record)

    def account_changed(self, record: AccountRecord) -> None:
        self.credits.load(record.id, record.granted_micros, record.used_micros, record.unlimited)

    async def admit(self, key: KeyRecord, tokens: int, amount: int, request_id: str) -> Hold:
        account_id = key.account_id or key.id  # account_of
        account = self.accounts(account_id)
        permit = self.limiter.acquire(key, tokens)
        account_permit = None
        if account is not None and (account.rpm or account.tpm or account.max_concurrency):
            try:
                account_permit = self.limiter.acquire(account, tokens, who=ACCOUNT)
            except BaseException:
                self.limiter.cancel(permit)
                raise
        reservation = self.credits.reserve(account_id, amount, self.credits.caps.get(key.id))
        if not isinstance(reservation, Reservation):
            self.limiter.cancel(permit)
            if account_permit is not None:
                self.limiter.cancel(account_permit)
            raise Unaffordable(reservation)
        return Hold(
            key.id,
            request_id,
            amount,
            tokens,
            permit=permit,
            reservation=reservation,
            account_permit=account_permit,
            account_id=account_id,
        )

    async def cancel(self, hold: Hold) -> None:
        assert hold.permit is not None
        assert hold.reservation is not None
        self.limiter.cancel(hold.permit)
        if hold.account_permit is not None:
            self.limiter.cancel(hold.account_permit)
        self.credits.settle(hold.reservation, 0)

    async def settle(self, hold: Hold, cost: int, tokens: int) -> int:
        assert hold.permit is not None
        assert hold.reservation is not None
        self.limiter.release(hold.permit, tokens)
        if hold.account_permit is not None:
            self.limiter.release(hold.account_permit, tokens)
        return self.credits.settle(hold.reservation, cost)

    async def balance(self, key: KeyRecord) -> Balance:
        account = self.credits.balance(account_of(key))
        cap = self.credits.caps.get(key.id)
        cap_remaining = None
        if cap is not None:
            cap.roll(time.time())
            cap_remaining = cap.limit - cap.used
        if account is None:
            return Balance(key.granted_micros, key.used_micros, key.unlimited, cap_remaining)
        return Balance(account.granted, account.used, account.unlimited, cap_remaining)
