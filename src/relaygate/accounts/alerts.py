"""Low-balance alerts: one signed webhook when an account's balance falls below its threshold.

Off the request path: every ``alert_check_seconds`` each replica runs :func:`check_once` (claim
the accounts that crossed their threshold, recording one alert each, and arm again those a
top-up lifted back) and :func:`deliver_once` (send the alerts that are due). The store makes
each decision in one statement (see :mod:`relaygate.store.alerts_sql`), so with several replicas
a crossing gives one alert, and each attempt is made by one replica.

Delivery is at least once: an alert is retried with exponential back-off until the receiver
answers 2xx or ``alert_max_attempts`` is spent, and a replica that dies mid-send leaves it to be
sent again. Every attempt carries the same event id (``X-Relaygate-Event-Id`` and the body's
``id``), for receivers to drop repeats.

The signature follows Stripe's scheme: ``X-Relaygate-Signature: t=<unix seconds>,v1=<hex>``,
the HMAC-SHA256 with ``alert_webhook_secret`` of ``"<t>.<body>"``. The timestamp inside the
signed text lets a receiver refuse replays (older than a few minutes); the ``v1=`` label leaves
room for another scheme, or for two signatures while a secret is rotated.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from relaygate.accounting.prices import micros_to_usd
from relaygate.settings import Settings
from relaygate.store.alerts_sql import (
    AlertDelivery,
    Crossing,
    EventBuilder,
    claim_crossings,
    claim_due,
    give_up_stale,
    rearm,
    record_attempt,
)
from relaygate.store.sql import SqlStore
from relaygate.tasks import stop_task

log = logging.getLogger("relaygate.alerts")

EVENT_TYPE = "account.low_balance"
SIGNATURE_HEADER = "X-Relaygate-Signature"
EVENT_ID_HEADER = "X-Relaygate-Event-Id"
EVENT_TYPE_HEADER = "X-Relaygate-Event"
MAX_RETRY_DELAY_SECONDS = 3600
"""The back-off's ceiling, whatever ``alert_retry_base_seconds`` and the attempt number."""
MAX_RESPONSE_BYTES = 1024
"""Most bytes of a receiver's answer read (its status is what counts)."""
LEASE_MARGIN_SECONDS = 60
"""A claimed attempt is left to its replica for ``alert_timeout_seconds`` plus this; then
another replica may send it again (the first one died)."""
BATCH = 50
"""Most alerts one pass sends (at once)."""
CLOSE_WAIT_SECONDS = 2.0
"""At shutdown, how long a pass under way may take to finish before it is cut."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def low_balance_event(crossing: Crossing, now_ms: int) -> tuple[str, str]:
    """The event id and JSON body of the alert for ``crossing``."""
    event_id = "evt_" + secrets.token_hex(12)
    body = {
        "id": event_id,
        "type": EVENT_TYPE,
        "created": now_ms // 1000,
        "data": {
            "account_id": crossing.account_id,
            "account_name": crossing.name,
            "threshold_usd": str(micros_to_usd(crossing.threshold_micros)),
            "threshold_micros": crossing.threshold_micros,
            "balance_usd": str(micros_to_usd(crossing.balance_micros)),
            "balance_micros": crossing.balance_micros,
            "granted_micros": crossing.granted_micros,
            "used_micros": crossing.used_micros,
        },
    }
    return event_id, json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Relaygate-Signature`` value of ``body`` sent at ``timestamp`` (unix seconds)."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def retry_delay_ms(base_seconds: float, attempts: int) -> int:
    """The wait after failed attempt number ``attempts`` (1, 2, ...): the base, doubled for
    each further attempt, at most :data:`MAX_RETRY_DELAY_SECONDS`."""
    seconds = min(base_seconds * 2.0 ** min(attempts - 1, 32), MAX_RETRY_DELAY_SECONDS)
    return max(1, int(seconds * 1000))


@dataclass(slots=True)
class CheckResult:
    """What one detection pass did."""

    alerts: list[AlertDelivery] = field(default_factory=list)
    """The alerts this pass claimed and recorded (to be sent)."""
    rearmed: list[str] = field(default_factory=list)
    """Accounts armed again (back at or above their threshold)."""


async def check_once(
    store: SqlStore, now_ms: int | None = None, build: EventBuilder = low_balance_event
) -> CheckResult:
    """One detection pass: arm again the accounts a top-up lifted, then claim the crossings."""
    now_ms = _now_ms() if now_ms is None else now_ms
    rearmed = await rearm(store)
    alerts = await claim_crossings(store, now_ms, build)
    for alert in alerts:
        log.info(
            "account %s is below its low-balance threshold (%s USD < %s USD): alert %s",
            alert.account_id,
            micros_to_usd(alert.balance_micros),
            micros_to_usd(alert.threshold_micros),
            alert.id,
        )
    return CheckResult(alerts=alerts, rearmed=rearmed)


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one delivery attempt."""

    delivery: AlertDelivery
    """As claimed: ``delivery.attempts`` is this attempt's number."""
    status: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.error is None


async def _post(
    session: aiohttp.ClientSession, settings: Settings, delivery: AlertDelivery
) -> Attempt:
    url = settings.alert_webhook_url
    secret = settings.alert_webhook_secret
    assert url is not None  # the task does not run without it
    assert secret is not None  # required with the url (settings check)
    body = delivery.payload.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "relaygate-alerts",
        EVENT_ID_HEADER: delivery.id,
        EVENT_TYPE_HEADER: EVENT_TYPE,
        SIGNATURE_HEADER: signature(secret, int(time.time()), body),
    }
    timeout = aiohttp.ClientTimeout(total=settings.alert_timeout_seconds)
    try:
        async with session.post(
            url, data=body, headers=headers, allow_redirects=False, timeout=timeout
        ) as response:
            await response.content.read(MAX_RESPONSE_BYTES)
            status = response.status
    except TimeoutError:
        return Attempt(delivery, None, "timeout")
    except (aiohttp.ClientError, OSError) as exc:
        return Attempt(delivery, None, type(exc).__name__)
    return Attempt(delivery, status, None if 200 <= status < 300 else f"HTTP {status}")


async def _record(store: SqlStore, settings: Settings, attempt: Attempt, now_ms: int) -> None:
    delivery = attempt.delivery
    if attempt.delivered:
        await record_attempt(
            store,
            delivery,
            status=attempt.status,
            error=None,
            delivered_at=now_ms,
            next_attempt_at=None,
        )
        log.info("alert %s delivered (attempt %d)", delivery.id, delivery.attempts)
        return
    last = delivery.attempts >= settings.alert_max_attempts
    delay = retry_delay_ms(settings.alert_retry_base_seconds, delivery.attempts)
    await record_attempt(
        store, delivery, status=attempt.status, error=attempt.error, delivered_at=None,
        next_attempt_at=None if last else now_ms + delay,
    )  # fmt: skip
    if last:
        log.error(
            "alert %s for account %s not delivered after %d attempts (last: %s): given up",
            delivery.id,
            delivery.account_id,
            delivery.attempts,
            attempt.error,
        )
    else:
        log.warning(
            "alert %s: attempt %d failed (%s), next in %g s",
            delivery.id,
            delivery.attempts,
            attempt.error,
            delay / 1000,
        )


async def deliver_once(
    store: SqlStore,
    session: aiohttp.ClientSession,
    settings: Settings,
    now_ms: int | None = None,
) -> list[Attempt]:
    """One delivery pass: claim the alerts that are due, send them at once, record each
    outcome and schedule the retries. Does nothing while ``alert_webhook_url`` is unset."""
    if settings.alert_webhook_url is None:
        return []
    now_ms = _now_ms() if now_ms is None else now_ms
    for stale in await give_up_stale(store, now_ms, settings.alert_max_attempts):
        log.error(
            "alert %s for account %s: its last attempt never reported back: given up",
            stale.id,
            stale.account_id,
        )
    lease_ms = round((settings.alert_timeout_seconds + LEASE_MARGIN_SECONDS) * 1000)
    claimed = await claim_due(
        store, now_ms, lease_ms=lease_ms, max_attempts=settings.alert_max_attempts, limit=BATCH
    )
    attempts = await asyncio.gather(*(_post(session, settings, d) for d in claimed))
    for attempt in attempts:
        await _record(store, settings, attempt, now_ms)
    return list(attempts)


class LowBalanceAlerts:
    """The background task of one worker: :func:`check_once` and :func:`deliver_once` every
    ``alert_check_seconds``, while ``alert_webhook_url`` is set."""

    def __init__(self, store: SqlStore, session: aiohttp.ClientSession, settings: Settings) -> None:
        self.store = store
        self.session = session
        self.settings = settings
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._failing = False

    def start(self) -> None:
        if self.settings.alert_webhook_url is None or self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name="relaygate-low-balance-alerts")

    async def close(self) -> None:
        """Stop the task: a pass under way may finish for :data:`CLOSE_WAIT_SECONDS`, then it
        is cut, and an attempt it was making is made again once its lease runs out (by this
        replica's next start, or by another replica)."""
        task, self._task = self._task, None
        if task is None:
            return
        await stop_task(task, self._stop, CLOSE_WAIT_SECONDS)

    async def run_once(self) -> None:
        """One check and one delivery pass. A failure (the store unreachable, say) is logged,
        with its traceback the first time, and the next check tries again."""
        failed = False
        steps: tuple[tuple[str, Callable[[], Awaitable[object]]], ...] = (
            ("check", lambda: check_once(self.store)),
            ("delivery", lambda: deliver_once(self.store, self.session, self.settings)),
        )
        for name, step in steps:
            try:
                await step()
            except Exception:
                log.warning("low-balance alerts: the %s failed", name, exc_info=not self._failing)
                failed = True
        if self._failing and not failed:
            log.info("low-balance alerts: working again")
        self._failing = failed

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.alert_check_seconds)
