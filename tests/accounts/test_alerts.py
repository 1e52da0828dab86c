"""Low-balance alerts against a real receiver on loopback, on SQLite and PostgreSQL.

The detector and the deliverer are driven one pass at a time (``check_once``, ``deliver_once``)
with the clock passed in, so back-off is checked without waiting; the background task is
checked once, in-process and in a real ``relaygate serve``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from sqlalchemy import update

from relaygate.accounts.alerts import (
    LowBalanceAlerts,
    check_once,
    deliver_once,
    retry_delay_ms,
)
from relaygate.errors import ConfigError
from relaygate.redaction import configured_secrets
from relaygate.settings import Settings, settings_from_mapping
from relaygate.store.alerts_sql import claim_due, deliveries
from relaygate.store.schema import accounts
from relaygate.store.sql import SqlStore
from tests.store.test_store import Backend
from tests.support.gateway import GatewayProcess, free_port

SECRET = "whsec-test-SECRET-0123456789abcdef"
USD = 1_000_000
T0 = 1_800_000_000_000  # unix ms: the clock the one-pass tests run on


# --- a receiver that checks signatures like a customer's would ---------------------------------


def signature_ok(header: str, body: bytes, secret: str = SECRET) -> bool:
    """Verify ``t=<unix>,v1=<hex>`` as a receiver does, written here from the README."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), parts["v1"])


class Receiver:
    """An aiohttp server on loopback recording each POST; ``statuses`` are answered first
    (one per request), then 200."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.delivered = asyncio.Event()
        self.redirect_target_hits = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), body))
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 302:
            raise web.HTTPFound("/elsewhere")
        if status == 200:
            self.delivered.set()
        return web.Response(status=status, text="x" * 100_000)

    async def _elsewhere(self, request: web.Request) -> web.Response:
        self.redirect_target_hits += 1
        return web.Response(status=200)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        app.router.add_route("*", "/elsewhere", self._elsewhere)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/hook"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


# --- fixtures ----------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    started = await Receiver().start()
    yield started
    await started.stop()


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def alert_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "alert_webhook_url": url,
        "alert_webhook_secret": SECRET,
        "alert_max_attempts": 3,
        "alert_retry_base_seconds": 0.001,
        "alert_timeout_seconds": 5.0,
        **overrides,
    }
    return Settings(**values)


async def add_account(
    store: SqlStore,
    account_id: str,
    *,
    granted: int = 10 * USD,
    used: int = 0,
    threshold: int | None = 5 * USD,
    unlimited: bool = False,
) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            accounts.insert().values(
                id=account_id,
                name=f"Team {account_id}",
                status="active",
                created_at=1_700_000_000,
                granted_micros=granted,
                used_micros=used,
                unlimited=unlimited,
                low_balance_micros=threshold,
                low_balance_alerted=False,
                revision=0,
            )
        )


async def set_account(store: SqlStore, account_id: str, **values: Any) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(update(accounts).where(accounts.c.id == account_id).values(**values))


# --- one crossing, one signed alert ------------------------------------------------------------


async def test_a_crossing_sends_one_signed_alert(
    store: SqlStore, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    settings = alert_settings(receiver.url)
    await add_account(store, "acct_above", used=4 * USD)  # 6 USD left: above 5
    await add_account(store, "acct_below", used=6 * USD)  # 4 USD left: below 5
    await add_account(store, "acct_none", used=10 * USD, threshold=None)
    await add_account(store, "acct_unlimited", used=10 * USD, unlimited=True)

    result = await check_once(store, now_ms=T0)
    assert [a.account_id for a in result.alerts] == ["acct_below"]
    (attempt,) = await deliver_once(store, session, settings, now_ms=T0)
    assert attempt.delivered

    ((headers, body),) = receiver.received
    assert signature_ok(headers["X-Relaygate-Signature"], body)
    assert not signature_ok(headers["X-Relaygate-Signature"], body, secret=SECRET + "x")
    assert headers["Content-Type"] == "application/json"
    event = json.loads(body)
    assert headers["X-Relaygate-Event-Id"] == event["id"] == result.alerts[0].id
    assert event["type"] == "account.low_balance"
    assert event["created"] == T0 // 1000
    assert event["data"] == {
        "account_id": "acct_below",
        "account_name": "Team acct_below",
        "threshold_usd": "5.000000",
        "threshold_micros": 5 * USD,
        "balance_usd": "4.000000",
        "balance_micros": 4 * USD,
        "granted_micros": 10 * USD,
        "used_micros": 6 * USD,
    }

    (record,) = await deliveries(store)
    assert (record.state, record.attempts, record.last_status) == ("delivered", 1, 200)
    assert (record.threshold_micros, record.balance_micros) == (5 * USD, 4 * USD)
    assert record.delivered_at == T0
    # nothing more: the account stays alerted, the alert is delivered
    assert (await check_once(store, now_ms=T0 + 1000)).alerts == []
    assert await deliver_once(store, session, settings, now_ms=T0 + 10**9) == []
    assert len(receiver.received) == 1


async def test_racing_replicas_alert_each_crossing_once(
    backend: Backend, store: SqlStore, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """Two detectors and two deliverers on their own connections, as two replicas."""
    settings = alert_settings(receiver.url)
    replicas = [backend.open(), backend.open()]
    ids = [f"acct_{i:02d}" for i in range(20)]
    for account_id in ids:
        await add_account(store, account_id, used=9 * USD)

    claimed: list[str] = []
    for round_ in range(3):
        results = await asyncio.gather(*(check_once(r, now_ms=T0 + round_) for r in replicas))
        claimed += [alert.account_id for result in results for alert in result.alerts]
    assert sorted(claimed) == ids
    assert sorted(d.account_id for d in await deliveries(store)) == ids

    for round_ in range(3):
        await asyncio.gather(
            *(deliver_once(r, session, settings, now_ms=T0 + round_) for r in replicas)
        )
    assert sorted(event["data"]["account_id"] for event in receiver.events()) == ids
    assert all(d.state == "delivered" and d.attempts == 1 for d in await deliveries(store))


async def test_a_top_up_rearms_and_the_next_crossing_alerts_again(
    store: SqlStore, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    settings = alert_settings(receiver.url)
    await add_account(store, "acct_1", used=6 * USD)
    first = (await check_once(store, now_ms=T0)).alerts
    assert len(first) == 1

    # still below: nothing; topped up to exactly the threshold: armed again, no alert
    await set_account(store, "acct_1", used_micros=7 * USD)
    assert (await check_once(store, now_ms=T0 + 1)).alerts == []
    await set_account(store, "acct_1", granted_micros=12 * USD)
    result = await check_once(store, now_ms=T0 + 2)
    assert (result.rearmed, result.alerts) == (["acct_1"], [])
    assert (await check_once(store, now_ms=T0 + 3)).rearmed == []

    await set_account(store, "acct_1", used_micros=8 * USD)  # 4 USD left
    second = (await check_once(store, now_ms=T0 + 4)).alerts
    assert len(second) == 1
    assert second[0].id != first[0].id
    assert second[0].balance_micros == 4 * USD

    await deliver_once(store, session, settings, now_ms=T0 + 5)
    assert [e["id"] for e in receiver.events()] == [first[0].id, second[0].id]


async def test_removing_the_threshold_rearms(store: SqlStore) -> None:
    await add_account(store, "acct_1", used=6 * USD)
    assert len((await check_once(store, now_ms=T0)).alerts) == 1
    await set_account(store, "acct_1", low_balance_micros=None)
    assert (await check_once(store, now_ms=T0 + 1)).rearmed == ["acct_1"]
    await set_account(store, "acct_1", low_balance_micros=5 * USD)
    assert len((await check_once(store, now_ms=T0 + 2)).alerts) == 1


# --- retries -----------------------------------------------------------------------------------


async def test_failures_are_retried_with_back_off_until_delivered(
    store: SqlStore, session: aiohttp.ClientSession
) -> None:
    receiver = await Receiver(statuses=(500, 500)).start()
    try:
        settings = alert_settings(receiver.url, alert_retry_base_seconds=2.0)
        await add_account(store, "acct_1", used=6 * USD)
        await check_once(store, now_ms=T0)

        (first,) = await deliver_once(store, session, settings, now_ms=T0)
        assert (first.delivered, first.status, first.error) == (False, 500, "HTTP 500")
        (record,) = await deliveries(store)
        assert (record.state, record.attempts, record.last_status) == ("pending", 1, 500)
        assert record.next_attempt_at == T0 + 2000
        # not due yet: nothing is sent
        assert await deliver_once(store, session, settings, now_ms=T0 + 1999) == []

        (second,) = await deliver_once(store, session, settings, now_ms=T0 + 2000)
        assert second.status == 500
        (record,) = await deliveries(store)
        assert record.next_attempt_at == T0 + 2000 + 4000  # doubled

        (third,) = await deliver_once(store, session, settings, now_ms=T0 + 6000)
        assert third.delivered
        (record,) = await deliveries(store)
        assert (record.state, record.attempts, record.last_status) == ("delivered", 3, 200)
        assert record.last_error is None
        assert record.next_attempt_at is None

        # the same event, byte for byte, each time (receivers de-duplicate by its id)
        bodies = {body for _, body in receiver.received}
        assert len(receiver.received) == 3
        assert len(bodies) == 1
        assert {h["X-Relaygate-Event-Id"] for h, _ in receiver.received} == {record.id}
        assert all(signature_ok(h["X-Relaygate-Signature"], b) for h, b in receiver.received)
    finally:
        await receiver.stop()


async def test_an_unreachable_receiver_is_given_up_after_max_attempts(
    store: SqlStore, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    settings = alert_settings(f"http://127.0.0.1:{free_port()}/hook", alert_max_attempts=3)
    await add_account(store, "acct_1", used=6 * USD)
    await check_once(store, now_ms=T0)
    now = T0
    with caplog.at_level(logging.INFO, "relaygate.alerts"):
        for attempt in (1, 2, 3):
            (outcome,) = await deliver_once(store, session, settings, now_ms=now)
            assert (outcome.delivered, outcome.status) == (False, None)
            assert outcome.error == "ClientConnectorError"
            (record,) = await deliveries(store)
            assert record.attempts == attempt
            if record.next_attempt_at is not None:
                now = record.next_attempt_at
    assert (record.state, record.last_status, record.next_attempt_at) == ("failed", None, None)
    assert record.last_error == "ClientConnectorError"
    assert await deliver_once(store, session, settings, now_ms=now + 10**9) == []
    assert "not delivered after 3 attempts" in caplog.text


async def test_a_redirect_is_not_followed(store: SqlStore, session: aiohttp.ClientSession) -> None:
    receiver = await Receiver(statuses=(302,)).start()
    try:
        settings = alert_settings(receiver.url)
        await add_account(store, "acct_1", used=6 * USD)
        await check_once(store, now_ms=T0)
        (outcome,) = await deliver_once(store, session, settings, now_ms=T0)
        assert (outcome.delivered, outcome.status) == (False, 302)
        assert receiver.redirect_target_hits == 0
        (record,) = await deliveries(store)
        assert (record.state, record.last_error) == ("pending", "HTTP 302")
    finally:
        await receiver.stop()


async def test_a_claimed_attempt_that_never_reports_is_sent_again(
    backend: Backend, store: SqlStore, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    """A replica that dies mid-send: the claim's lease runs out and another replica sends."""
    settings = alert_settings(receiver.url)
    await add_account(store, "acct_1", used=6 * USD)
    await check_once(store, now_ms=T0)
    (claimed,) = await claim_due(store, T0, lease_ms=60_000, max_attempts=3, limit=10)
    other = backend.open()
    assert await deliver_once(other, session, settings, now_ms=T0 + 59_999) == []
    (outcome,) = await deliver_once(other, session, settings, now_ms=T0 + 60_000)
    assert outcome.delivered
    assert outcome.delivery.attempts == 2
    assert [e["id"] for e in receiver.events()] == [claimed.id]


async def test_a_last_attempt_that_never_reports_is_given_up(
    store: SqlStore, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    settings = alert_settings(receiver.url, alert_max_attempts=1)
    await add_account(store, "acct_1", used=6 * USD)
    await check_once(store, now_ms=T0)
    await claim_due(store, T0, lease_ms=60_000, max_attempts=1, limit=10)  # then "dies"
    assert await deliver_once(store, session, settings, now_ms=T0 + 60_000) == []
    (record,) = await deliveries(store)
    assert (record.state, record.attempts) == ("failed", 1)
    assert receiver.received == []


def test_retry_delays_double_up_to_an_hour() -> None:
    assert [retry_delay_ms(5.0, n) for n in (1, 2, 3, 4)] == [5000, 10000, 20000, 40000]
    assert retry_delay_ms(5.0, 40) == 3_600_000
    assert retry_delay_ms(0.0001, 1) == 1


# --- secrets and settings ----------------------------------------------------------------------


async def test_the_secret_and_signatures_are_never_logged(
    store: SqlStore, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    receiver = await Receiver(statuses=(500,)).start()
    try:
        settings = alert_settings(receiver.url)
        assert SECRET in configured_secrets(settings)  # the log filter redacts it anyway
        await add_account(store, "acct_1", used=6 * USD)
        with caplog.at_level(logging.DEBUG):
            await check_once(store, now_ms=T0)
            await deliver_once(store, session, settings, now_ms=T0)
            await deliver_once(store, session, settings, now_ms=T0 + 10**6)
        assert len(receiver.received) == 2
        logged = caplog.text + "".join(str(r.args) for r in caplog.records)
        assert "attempt 1 failed (HTTP 500)" in logged
        assert SECRET not in logged
        for headers, _ in receiver.received:
            assert headers["X-Relaygate-Signature"].split("v1=")[1] not in logged
    finally:
        await receiver.stop()


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        pytest.param(
            {"alert_webhook_url": "https://hooks.example/x"}, "alert_webhook_secret", id="no-secret"
        ),
        pytest.param(
            {"alert_webhook_url": "https://hooks.example/x", "alert_webhook_secret": "short"},
            "alert_webhook_secret",
            id="short-secret",
        ),
        pytest.param(
            {"alert_webhook_url": "ftp://hooks.example/x", "alert_webhook_secret": SECRET},
            "alert_webhook_url",
            id="ftp",
        ),
        pytest.param(
            {"alert_webhook_url": "hooks.example/x", "alert_webhook_secret": SECRET},
            "alert_webhook_url",
            id="no-scheme",
        ),
    ],
)
def test_bad_alert_settings_are_refused(values: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        settings_from_mapping(values, "relaygate.yaml", {})
    assert SECRET not in str(caught.value)


async def test_without_a_webhook_url_nothing_runs(
    store: SqlStore, session: aiohttp.ClientSession
) -> None:
    settings = Settings()
    alerts = LowBalanceAlerts(store, session, settings)
    alerts.start()
    assert alerts._task is None
    await alerts.close()
    assert await deliver_once(store, session, settings) == []


# --- the background task -----------------------------------------------------------------------


async def test_the_background_task_detects_and_delivers(
    store: SqlStore, receiver: Receiver, session: aiohttp.ClientSession
) -> None:
    alerts = LowBalanceAlerts(
        store, session, alert_settings(receiver.url, alert_check_seconds=0.01)
    )
    alerts.start()
    try:
        await add_account(store, "acct_1", used=6 * USD)
        await asyncio.wait_for(receiver.delivered.wait(), timeout=30)
    finally:
        await alerts.close()
    (event,) = receiver.events()
    assert event["data"]["account_id"] == "acct_1"


async def test_relaygate_serve_runs_the_alerts(tmp_path: Path, receiver: Receiver) -> None:
    """The app starts the task with its own session, and stops it at shutdown."""
    config = {
        "models": {},
        "alert_webhook_url": receiver.url,
        "alert_webhook_secret": SECRET,
        "alert_check_seconds": 0.05,
        "log_level": "debug",
        "journal_path": str(tmp_path / "journal"),
    }
    gateway = await asyncio.to_thread(GatewayProcess(tmp_path, config).start)
    try:
        store = SqlStore(f"sqlite:///{tmp_path / 'relaygate.db'}")
        try:
            await add_account(store, "acct_served", used=6 * USD)
            await asyncio.wait_for(receiver.delivered.wait(), timeout=30)
        finally:
            await store.close()
    finally:
        await asyncio.to_thread(gateway.stop)
    ((headers, body),) = receiver.received
    assert signature_ok(headers["X-Relaygate-Signature"], body)
    assert json.loads(body)["data"]["account_id"] == "acct_served"
    assert SECRET not in gateway.logs()
