"""The router against real fake upstreams on loopback: priority and weight, failover, retries
with back-off and Retry-After, credentials errors, health ejection and recovery, 502 and 503.

Back-off waits go through an injected ``sleep`` that records them (nothing here sleeps), and
health time through an injected clock.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest

from relaygate.accounting.prices import Price
from relaygate.errors import (
    InvalidRequest,
    ServiceUnavailable,
    UpstreamError,
    UpstreamsRateLimited,
)
from relaygate.providers.base import TextDelta
from relaygate.providers.openai import OpenAIProvider
from relaygate.routing.catalog import CatalogModel
from relaygate.routing.health import HealthPolicy, State, UpstreamHealth
from relaygate.routing.router import MAX_RETRY_WAIT, Opened, Replay, open_upstream, route_order
from relaygate.settings import ModelSettings, Pricing, UpstreamSettings
from relaygate.upstream_http import UpstreamClient
from tests.providers.support import call
from tests.routing.support import Clock
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import free_port

SECRET = "sk-upstream-SECRET-router-0123456789"
PRICING = Pricing(input=Decimal(1), output=Decimal(1))


class Sleeps:
    """An injected ``sleep`` that records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def primary() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(default=Behavior(text="from primary")).start()
    yield fake
    fake.stop()


@pytest.fixture
def secondary() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(default=Behavior(text="from secondary")).start()
    yield fake
    fake.stop()


@pytest.fixture
async def session() -> AsyncIterator[UpstreamClient]:
    async with UpstreamClient() as client:
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def upstream(name: str, url: str, **fields: Any) -> UpstreamSettings:
    fields = {"health_min_requests": 2, "health_cooldown_seconds": 30, **fields}
    return UpstreamSettings(
        provider="openai", name=name, base_url=url, api_key=SECRET, model=name, **fields
    )


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


def model_of(
    session: UpstreamClient, clock: Clock, *upstreams: UpstreamSettings
) -> CatalogModel:
    providers = [OpenAIProvider(settings, session) for settings in upstreams]
    health = [
        UpstreamHealth(p.label, HealthPolicy.from_settings(p.settings), clock) for p in providers
    ]
    return CatalogModel(
        "routed", ModelSettings(pricing=PRICING), Price.from_settings(PRICING), providers, health
    )


async def route(model: CatalogModel, sleeps: Sleeps, seed: int = 1) -> Opened:
    body = {"model": "routed", "messages": [{"role": "user", "content": "hi"}]}
    return await open_upstream(model, call(body), sleep=sleeps, rng=random.Random(seed))


async def answered_by(model: CatalogModel, sleeps: Sleeps, seed: int = 1) -> str:
    """Route one request, read its answer to the end, and name the upstream that gave it."""
    opened = await route(model, sleeps, seed)
    [batch async for batch in opened.events]
    return opened.provider.label


# --- order ------------------------------------------------------------------------------------


async def test_lower_priority_goes_first(
    primary: FakeOpenAI,
    secondary: FakeOpenAI,
    session: UpstreamClient,
    clock: Clock,
    sleeps: Sleeps,
) -> None:
    model = model_of(
        session,
        clock,
        upstream("secondary", secondary.base_url, priority=1, weight=100),
        upstream("primary", primary.base_url, priority=0),
    )
    labels = {await answered_by(model, sleeps, seed) for seed in range(10)}
    assert labels == {"primary"}
    assert len(secondary.received) == 0
    assert primary.received[-1].body["model"] == "primary"  # each upstream's own model name


def test_weights_share_traffic_among_equal_priorities(
    session: UpstreamClient, clock: Clock
) -> None:
    model = model_of(
        session,
        clock,
        upstream("heavy", "http://a.invalid/v1", weight=3),
        upstream("light", "http://b.invalid/v1", weight=1),
        upstream("backup", "http://c.invalid/v1", priority=5, weight=1000),
    )
    rng = random.Random(7)
    orders = [route_order(model, rng) for _ in range(4000)]
    firsts = Counter(order[0] for order in orders)
    assert set(firsts) == {0, 1}
    assert 0.72 < firsts[0] / 4000 < 0.78  # 3:1
    assert all(order[-1] == 2 for order in orders)  # a higher priority always comes last


# --- failover and retries ---------------------------------------------------------------------


async def test_primary_down_secondary_answers_at_once(
    secondary: FakeOpenAI, session: UpstreamClient, clock: Clock, sleeps: Sleeps
) -> None:
    model = model_of(
        session,
        clock,
        upstream("primary", dead_url()),
        upstream("secondary", secondary.base_url, priority=1),
    )
    assert await answered_by(model, sleeps) == "secondary"
    assert sleeps.waits == []  # no back-off while another upstream can answer
    assert len(secondary.received) == 1


async def test_primary_429_then_recovers_after_its_retry_after(
    primary: FakeOpenAI, session: UpstreamClient, clock: Clock, sleeps: Sleeps
) -> None:
    primary.script = [Behavior(status=429, retry_after="1.5")]
    model = model_of(session, clock, upstream("primary", primary.base_url))
    assert await answered_by(model, sleeps) == "primary"
    assert sleeps.waits == [1.5]  # the upstream's Retry-After, honoured
    assert len(primary.received) == 2
    assert model.health[0].snapshot()["window_failure_rate"] == 0.0  # one request, one success


async def test_a_retry_after_above_the_cap_is_not_waited_for(
    primary: FakeOpenAI, session: UpstreamClient, clock: Clock, sleeps: Sleeps
) -> None:
    primary.default = Behavior(status=429, retry_after=str(MAX_RETRY_WAIT * 10))
    model = model_of(session, clock, upstream("primary", primary.base_url))
    with pytest.raises(UpstreamsRateLimited) as caught:
        await route(model, sleeps)
    # the only upstream refused for rate: the client is told to come back when it said
    assert (caught.value.status, caught.value.type) == (429, "rate_limit_error")
    assert (b"retry-after", b"20") in caught.value.headers()
    assert sleeps.waits == []
    assert len(primary.received) == 1


async def test_5xx_is_retried_with_backoff_and_jitter(
    primary: FakeOpenAI, session: UpstreamClient, clock: Clock, sleeps: Sleeps
) -> None:
    primary.script = [Behavior(status=503), Behavior(status=502)]
    model = model_of(session, clock, upstream("primary", primary.base_url, retries=2))
    assert await answered_by(model, sleeps) == "primary"
    assert len(primary.received) == 3
    first, second = sleeps.waits
    assert 0.05 <= first <= 0.1
    assert 0.1 <= second <= 0.2  # exponential


async def test_all_down_is_a_502_after_the_retries(
    primary: FakeOpenAI,
    secondary: FakeOpenAI,
    session: UpstreamClient,
    clock: Clock,
    sleeps: Sleeps,
) -> None:
    primary.default = Behavior(status=500)
    secondary.default = Behavior(status=503)
    model = model_of(
        session,
        clock,
        upstream("primary", primary.base_url, health_min_requests=5),
        upstream("secondary", secondary.base_url, priority=1, health_min_requests=5),
    )
    with pytest.raises(UpstreamError) as caught:
        await route(model, sleeps)
    assert (caught.value.status, caught.value.type) == (502, "upstream_error")
    assert SECRET not in caught.value.message
    assert (len(primary.received), len(secondary.received)) == (2, 2)  # one retry each
    assert len(sleeps.waits) == 1  # one back-off between the two rounds


async def test_rejected_credentials_are_logged_loudly_and_not_retried(
    primary: FakeOpenAI,
    secondary: FakeOpenAI,
    session: UpstreamClient,
    clock: Clock,
    sleeps: Sleeps,
    caplog: pytest.LogCaptureFixture,
) -> None:
    primary.default = Behavior(status=401, error_body='{"error": {"message": "bad key"}}')
    model = model_of(
        session,
        clock,
        upstream("primary", primary.base_url),
        upstream("secondary", secondary.base_url, priority=1),
    )
    with caplog.at_level(logging.WARNING, logger="relaygate.routing"):
        assert await answered_by(model, sleeps) == "secondary"
    assert len(primary.received) == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "primary" in errors[0].getMessage()
    assert "credentials" in errors[0].getMessage()
    assert SECRET not in caplog.text


async def test_a_request_the_upstream_calls_invalid_is_a_400_without_failover(
    primary: FakeOpenAI,
    secondary: FakeOpenAI,
    session: UpstreamClient,
    clock: Clock,
    sleeps: Sleeps,
) -> None:
    primary.default = Behavior(status=400, error_body='{"error": {"message": "bad field"}}')
    model = model_of(
        session,
        clock,
        upstream("primary", primary.base_url),
        upstream("secondary", secondary.base_url, priority=1),
    )
    with pytest.raises(InvalidRequest, match="bad field"):
        await route(model, sleeps)
    assert len(secondary.received) == 0
    assert model.health[0].state is State.HEALTHY


# --- health -----------------------------------------------------------------------------------


async def test_a_failing_primary_is_ejected_probed_and_put_back(
    primary: FakeOpenAI,
    secondary: FakeOpenAI,
    session: UpstreamClient,
    clock: Clock,
    sleeps: Sleeps,
) -> None:
    primary.default = Behavior(status=500)
    model = model_of(
        session,
        clock,
        upstream("primary", primary.base_url, retries=0),
        upstream("secondary", secondary.base_url, priority=1),
    )
    assert await answered_by(model, sleeps) == "secondary"
    assert model.health[0].state is State.HEALTHY  # one failure is not enough
    assert await answered_by(model, sleeps) == "secondary"
    assert model.health[0].state is State.EJECTED  # 2 of 2 failed
    tried = len(primary.received)
    assert await answered_by(model, sleeps) == "secondary"
    assert len(primary.received) == tried  # out of rotation: not even tried
    # after the cool-down one request probes the primary, which has recovered
    primary.default = Behavior(text="back")
    clock.advance(30)
    assert await answered_by(model, sleeps) == "primary"
    assert model.health[0].state is State.HEALTHY
    assert await answered_by(model, sleeps) == "primary"


async def test_a_failed_probe_falls_through_to_the_secondary(
    primary: FakeOpenAI,
    secondary: FakeOpenAI,
    session: UpstreamClient,
    clock: Clock,
    sleeps: Sleeps,
) -> None:
    primary.default = Behavior(status=500)
    model = model_of(
        session,
        clock,
        upstream("primary", primary.base_url, retries=0),
        upstream("secondary", secondary.base_url, priority=1),
    )
    for _ in range(2):
        await answered_by(model, sleeps)
    clock.advance(30)
    assert await answered_by(model, sleeps) == "secondary"  # the probe failed, the client did not
    assert model.health[0].state is State.EJECTED
    assert model.health[0].ejections == 2


async def test_every_upstream_out_of_rotation_is_a_503_with_a_suggestion(
    session: UpstreamClient, clock: Clock, sleeps: Sleeps
) -> None:
    model = model_of(
        session,
        clock,
        upstream("primary", dead_url(), retries=0),
        upstream("secondary", dead_url(), priority=1, retries=0),
    )
    for _ in range(2):
        with pytest.raises(UpstreamError):
            await route(model, sleeps)
    assert [h.state for h in model.health] == [State.EJECTED, State.EJECTED]
    clock.advance(10)
    with pytest.raises(ServiceUnavailable) as caught:
        await route(model, sleeps)
    error = caught.value
    assert (error.status, error.type) == (503, "service_unavailable_error")
    assert error.fallback_suggestion == "retry after 20 seconds"
    assert (b"retry-after", b"20") in error.headers()  # when the first cool-down ends
    assert "primary" in error.message
    assert "secondary" in error.message


async def test_one_request_is_one_outcome_however_many_attempts(
    primary: FakeOpenAI, session: UpstreamClient, clock: Clock, sleeps: Sleeps
) -> None:
    primary.default = Behavior(status=500)
    model = model_of(session, clock, upstream("primary", primary.base_url, retries=3))
    with pytest.raises(UpstreamError):
        await route(model, sleeps)
    assert len(primary.received) == 4
    snapshot = model.health[0].snapshot()
    assert (snapshot["window_requests"], snapshot["state"]) == (1, "healthy")


# --- a non-streamed answer ----------------------------------------------------------------------


async def test_a_non_streamed_answer_is_handed_over_as_its_batches_read_whole(
    primary: FakeOpenAI, session: UpstreamClient, clock: Clock, sleeps: Sleeps
) -> None:
    """The pipeline reads ``Replay.batches`` instead of awaiting each batch; the same batches
    come out of iterating it."""
    opened = await route(model_of(session, clock, upstream("primary", primary.base_url)), sleeps)
    assert isinstance(opened.events, Replay)
    batches = opened.events.batches
    assert any(isinstance(e, TextDelta) and e.text == "from primary" for b in batches for e in b)
    assert [batch async for batch in opened.events] == batches
