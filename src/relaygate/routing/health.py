"""Upstream health: a sliding window of outcomes, ejection, a cool-down, a probe, recovery.

Each upstream of each model has one :class:`UpstreamHealth`. It is a small circuit breaker:

    healthy ──(failure rate over the window ≥ threshold, with enough samples)──▶ ejected
    ejected ──(cool-down over: the next request is let through as a trial)──▶ probing
    probing ──(trial succeeds)──▶ healthy (window cleared)
    probing ──(trial fails)──▶ ejected (a new cool-down)
    probing ──(trial says nothing: a 429, a cancellation)──▶ ejected (the next request probes)

One outcome is one request's verdict on the upstream (all its attempts there), so a retried
request counts once. A single error never ejects an upstream: the window must hold at least
``min_requests`` outcomes first. A 429 is neither failure nor success
(:meth:`~UpstreamHealth.release`): the upstream is up and asks for a pause, so it is not counted
in the window, and a trial that gets one proves nothing. When it says how long
(``Retry-After``), it is skipped for that long (:meth:`~UpstreamHealth.hold`, at most a
cool-down), whatever its state, rather than sent requests it would refuse.

Outcomes are counted in :data:`BUCKETS` buckets per window, so the memory a tracker takes does
not grow with the traffic. Time comes from an injected clock
(``time.monotonic`` in the app), so tests move it by hand instead of sleeping.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from relaygate.errors import bounded_wait
from relaygate.settings import UpstreamSettings

Clock = Callable[[], float]
BUCKETS = 60
"""Buckets a window is counted in (an outcome leaves the window within one bucket's width)."""


class State(StrEnum):
    HEALTHY = "healthy"
    EJECTED = "ejected"
    PROBING = "probing"


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    """When an upstream is taken out of rotation, and for how long."""

    window_seconds: float = 60.0
    min_requests: int = 5
    failure_rate: float = 0.5
    cooldown_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: UpstreamSettings) -> HealthPolicy:
        return cls(
            window_seconds=settings.health_window_seconds,
            min_requests=settings.health_min_requests,
            failure_rate=settings.health_failure_rate,
            cooldown_seconds=settings.health_cooldown_seconds,
        )


class _Bucket:
    __slots__ = ("failures", "start", "total")

    def __init__(self, start: float) -> None:
        self.start = start
        self.total = 0
        self.failures = 0


class UpstreamHealth:
    """The health of one upstream (see the module docstring for the states)."""

    def __init__(
        self, label: str, policy: HealthPolicy | None = None, clock: Clock = time.monotonic
    ) -> None:
        self.label = label
        self.policy = policy or HealthPolicy()
        self._clock = clock
        self._width = self.policy.window_seconds / BUCKETS
        self._buckets: deque[_Bucket] = deque()
        self._total = 0
        self._failures = 0
        self.state = State.HEALTHY
        self._since = clock()
        """When the current state began (for the cool-down and a stuck trial)."""
        self.ejections = 0
        self.last_error = ""
        self._rate_until = 0.0
        """Until when (on the clock) the upstream asked not to be sent requests (429)."""

    # --- routing -------------------------------------------------------------------------

    def retry_in(self) -> float:
        """Seconds until this upstream may be tried again (0 when it may be tried now)."""
        if self.state is State.HEALTHY:
            return 0.0
        return max(0.0, self._since + self.policy.cooldown_seconds - self._clock())

    def rate_limited_for(self) -> float:
        """Seconds the upstream still asked not to be sent requests for (0 when none)."""
        if not self._rate_until:
            return 0.0
        return max(0.0, self._rate_until - self._clock())

    def hold(self, seconds: float) -> None:
        """The upstream refused for rate and asked for ``seconds``: skip it until then (for at
        most a cool-down, so that a wrong ``Retry-After`` cannot silence it for long). The
        latest answer wins."""
        self._rate_until = self._clock() + min(bounded_wait(seconds), self.policy.cooldown_seconds)

    def acquire(self) -> bool:
        """Whether a request may try this upstream now; the first request after a cool-down
        becomes the trial (and other requests keep away until its outcome is known)."""
        if self._rate_until and self.rate_limited_for() > 0:
            return False
        if self.state is State.HEALTHY:
            return True
        if self.retry_in() > 0:
            return False
        # The cool-down is over (or a trial never reported back within one): probe.
        self.state = State.PROBING
        self._since = self._clock()
        return True

    def record(self, ok: bool, error: str = "") -> None:
        """One request's outcome on this upstream (``error``: a short summary for /health)."""
        now = self._clock()
        if ok:
            self._rate_until = 0.0  # it takes requests again
        else:
            self.last_error = error
        if self.state is State.PROBING:
            if ok:
                self._reset(now)
            else:
                self._eject(now)
            return
        if self.state is State.EJECTED:
            return  # a request that started before the ejection: its verdict is already in
        buckets = self._buckets
        if ok and buckets and buckets[-1].start <= now < buckets[-1].start + self._width:
            # the usual outcome, in the current bucket: _count and _prune without their calls
            # (only the first bucket may have left the window)
            buckets[-1].total += 1
            self._total += 1
            if buckets[0].start + self._width <= now - self.policy.window_seconds:
                self._prune(now)
        else:
            self._count(now, ok)
            self._prune(now)
        total = self._total
        if total >= self.policy.min_requests and self._failures / total >= self.policy.failure_rate:
            self._eject(now)

    def release(self) -> None:
        """A request's outcome that says nothing about the upstream's health (a 429, or a
        request cancelled before its answer was over): not counted in the window. A trial
        request gives its slot back: the upstream stays out of rotation, and the next request
        may probe it (rather than being put back into rotation on no evidence)."""
        if self.state is State.PROBING:
            self.state = State.EJECTED
            self._since = self._clock() - self.policy.cooldown_seconds

    # --- state ---------------------------------------------------------------------------

    def _count(self, now: float, ok: bool) -> None:
        start = now - now % self._width
        if self._buckets and self._buckets[-1].start == start:
            bucket = self._buckets[-1]
        else:
            bucket = _Bucket(start)
            self._buckets.append(bucket)
        bucket.total += 1
        self._total += 1
        if not ok:
            bucket.failures += 1
            self._failures += 1

    def _prune(self, now: float) -> None:
        horizon = now - self.policy.window_seconds
        while self._buckets and self._buckets[0].start + self._width <= horizon:
            bucket = self._buckets.popleft()
            self._total -= bucket.total
            self._failures -= bucket.failures

    def _clear(self) -> None:
        self._buckets.clear()
        self._total = self._failures = 0

    def _reset(self, now: float) -> None:
        self.state = State.HEALTHY
        self._since = now
        self._clear()

    def _eject(self, now: float) -> None:
        self.state = State.EJECTED
        self._since = now
        self.ejections += 1
        self._clear()

    def snapshot(self) -> dict[str, Any]:
        """What ``GET /health`` shows about this upstream."""
        self._prune(self._clock())
        total = self._total
        details: dict[str, Any] = {
            "upstream": self.label,
            "state": str(self.state),
            "window_requests": total,
            "window_failure_rate": round(self._failures / total, 3) if total else 0.0,
            "ejections": self.ejections,
        }
        if self.state is not State.HEALTHY:
            details["retry_in_seconds"] = math.ceil(self.retry_in())
        paused = self.rate_limited_for()
        if paused:
            details["rate_limited_seconds"] = math.ceil(paused)
        if self.last_error:
            details["last_error"] = self.last_error
        return details


__all__ = ["Clock", "HealthPolicy", "State", "UpstreamHealth"]
