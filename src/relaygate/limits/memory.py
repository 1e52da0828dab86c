"""Rate limits held in this process: requests per minute, tokens per minute and concurrent
requests, per key and per account (an account's limits apply over all its keys)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from relaygate.errors import RateLimited
from relaygate.limits.gcra import Gcra


class Limited(Protocol):
    """A key or an account: what carries limits."""

    @property
    def id(self) -> str: ...
    @property
    def rpm(self) -> int | None: ...
    @property
    def tpm(self) -> int | None: ...
    @property
    def max_concurrency(self) -> int | None: ...


def has_limits(holder: Limited) -> bool:
    return bool(holder.rpm or holder.tpm or holder.max_concurrency)


@dataclass(slots=True)
class _KeyState:
    rpm: Gcra | None = None
    tpm: Gcra | None = None
    inflight: int = 0
    mean_held: float | None = None
    """The key's mean request time in seconds (a moving average): the Retry-After of a
    concurrency refusal."""
    limits: tuple[int | None, int | None] = (None, None)


@dataclass(slots=True)
class Permit:
    """What one admitted request holds until it is settled."""

    key_id: str
    tokens: int
    started: float = 0.0
    rpm_tat: float | None = None
    tpm_tat: float | None = None
    previous: tuple[float, float] = field(default=(0.0, 0.0))
    released: bool = False


class MemoryLimiter:
    """GCRA for RPM and TPM, a counter for concurrency; decisions are synchronous and so
    atomic within the event loop."""

    def __init__(self) -> None:
        self._keys: dict[str, _KeyState] = {}

    def _state(self, key: Limited) -> _KeyState:
        state = self._keys.get(key.id)
        if state is None:
            state = self._keys[key.id] = _KeyState()
        limits = state.limits
        if limits[0] != key.rpm or limits[1] != key.tpm:
            state.rpm = Gcra(key.rpm) if key.rpm else None
            state.tpm = Gcra(key.tpm) if key.tpm else None
            state.limits = (key.rpm, key.tpm)
        return state

    def acquire(
        self, key: Limited, tokens: int, now: float | None = None, who: str = "key"
    ) -> Permit:
        """Admit one request expected to use ``tokens``, or raise :class:`RateLimited` (its
        message names ``who``: this key, or its account)."""
        now = time.monotonic() if now is None else now
        state = self._state(key)
        if key.max_concurrency is not None and state.inflight >= key.max_concurrency:
            raise RateLimited(
                f"Rate limit exceeded: this {who} allows {key.max_concurrency} concurrent requests",
                retry_after=state.mean_held or 1,
            )
        rpm, tpm = state.rpm, state.tpm
        rpm_tat = tpm_tat = None
        rpm_before = tpm_before = 0.0
        if rpm is not None:
            ok, rpm_tat, wait = rpm.peek(now, 1)
            if not ok:
                raise RateLimited(
                    f"Rate limit exceeded: this {who} allows {key.rpm} requests per minute",
                    retry_after=wait,
                )
            rpm_before = rpm.tat
        if tpm is not None:
            ok, tpm_tat, wait = tpm.peek(now, tokens)
            if not ok:
                raise RateLimited(
                    f"Rate limit exceeded: this {who} allows {key.tpm} tokens per minute",
                    retry_after=wait,
                )
            tpm_before = tpm.tat
        # both checks passed: take both (a refusal above took nothing)
        if rpm is not None:
            rpm.tat = rpm_tat  # type: ignore[assignment]
        if tpm is not None:
            tpm.tat = tpm_tat  # type: ignore[assignment]
        state.inflight += 1
        return Permit(key.id, tokens, now, rpm_tat, tpm_tat, (rpm_before, tpm_before))

    def cancel(self, permit: Permit) -> None:
        """Undo an admission that another check refused (nothing was sent upstream)."""
        if permit.released:
            return
        permit.released = True
        state = self._keys[permit.key_id]
        state.inflight -= 1
        if state.rpm is not None and permit.rpm_tat == state.rpm.tat:
            state.rpm.tat = permit.previous[0]
        if state.tpm is not None and permit.tpm_tat == state.tpm.tat:
            state.tpm.tat = permit.previous[1]

    def release(self, permit: Permit, actual_tokens: int, now: float | None = None) -> None:
        """The request is over: free its slot and charge the tokens it really used."""
        if permit.released:
            return
        permit.released = True
        state = self._keys[permit.key_id]
        state.inflight -= 1
        held = (time.monotonic() if now is None else now) - permit.started
        state.mean_held = held if state.mean_held is None else state.mean_held * 0.8 + held * 0.2
        if state.tpm is not None:
            state.tpm.adjust(actual_tokens - min(permit.tokens, state.tpm.limit))
