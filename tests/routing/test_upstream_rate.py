"""Upstreams that refuse for rate (HTTP 429; issue 11, item 21), against real fake upstreams on
loopback: every upstream 429 is a 429 ``rate_limit_error`` with the soonest ``Retry-After`` any
upstream gave (``retry-after-ms`` too); some 429 and some failing is a 503 with that wait; the
upstream's ``Retry-After`` is read in seconds, HTTP-date and ``retry-after-ms`` forms; and the
OpenAI SDK sees the 429 and its header.
"""

from __future__ import annotations

import email.utils
import json
import math
import random
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest

from relaygate.accounting.prices import Price
from relaygate.errors import UpstreamsRateLimited, UpstreamStatus, UpstreamsUnavailable
from relaygate.providers.http import parse_retry_after, retry_after_header
from relaygate.providers.openai import OpenAIProvider
from relaygate.routing.catalog import CatalogModel
from relaygate.routing.fallback import open_chain
from relaygate.routing.health import HealthPolicy, State, UpstreamHealth
from relaygate.routing.router import DEFAULT_RATE_WAIT, Opened, open_upstream
from relaygate.settings import ModelSettings, Pricing, UpstreamSettings
from relaygate.upstream_http import UpstreamClient
from tests.providers.support import call
from tests.routing.support import Clock
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess

SECRET = "sk-upstream-SECRET-rate-0123456789"
PRICING = Pricing(input=Decimal(1), output=Decimal(1))
HELLO = {"model": "routed", "messages": [{"role": "user", "content": "hello"}]}


async def no_sleep(seconds: float) -> None:
    pass


@pytest.fixture
def first() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(default=Behavior(status=429, retry_after="7")).start()
    yield fake
    fake.stop()


@pytest.fixture
def second() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(default=Behavior(status=429, retry_after="3")).start()
    yield fake
    fake.stop()


@pytest.fixture
async def session() -> AsyncIterator[UpstreamClient]:
    async with UpstreamClient() as client:
        yield client


def upstream(name: str, url: str, **fields: Any) -> UpstreamSettings:
    fields = {"retries": 0, "health_min_requests": 5, **fields}
    return UpstreamSettings(
        provider="openai", name=name, base_url=url, api_key=SECRET, model=name, **fields
    )


def model_of(
    session: UpstreamClient,
    *upstreams: UpstreamSettings,
    name: str = "routed",
    clock: Clock | None = None,
) -> CatalogModel:
    clock = clock or Clock()
    providers = [OpenAIProvider(settings, session) for settings in upstreams]
    health = [
        UpstreamHealth(p.label, HealthPolicy.from_settings(p.settings), clock) for p in providers
    ]
    return CatalogModel(
        name, ModelSettings(pricing=PRICING), Price.from_settings(PRICING), providers, health
    )


async def route(model: CatalogModel) -> Opened:
    return await open_upstream(model, call(HELLO), sleep=no_sleep, rng=random.Random(1))


def retry_headers(headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """``Retry-After`` (whole seconds) and ``retry-after-ms`` of an error's headers."""
    values = {name.decode(): int(value) for name, value in headers}
    return values["retry-after"], values["retry-after-ms"]


# --- reading the upstream's Retry-After ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("3", 3.0, id="seconds"),
        pytest.param("1.5", 1.5, id="fractional-seconds"),
        pytest.param("-4", None, id="negative"),
        pytest.param("1e306", 86400.0, id="huge"),
        pytest.param("1e20", 86400.0, id="very-long"),
        pytest.param("Wed, 21 Oct 2015 07:28:30 GMT", 30.0, id="http-date"),
        pytest.param("Wednesday, 21-Oct-15 07:28:10 GMT", 10.0, id="rfc850-date"),
        pytest.param("Wed Oct 21 07:28:05 2015", 5.0, id="asctime-date"),
        pytest.param("Wed, 21 Oct 2015 07:27:00 GMT", 0.0, id="past-date"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("inf", None, id="infinite"),
        pytest.param("-inf", None, id="minus-infinite"),
        pytest.param("nan", None, id="nan"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(
    value: str | None, seconds: float | None
) -> None:
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2015 07:28:00 GMT").timestamp()
    assert parse_retry_after(value, now=now) == seconds


@pytest.mark.parametrize(
    ("headers", "value"),
    [
        pytest.param({"retry-after-ms": "250", "retry-after": "1"}, "0.25", id="ms-first"),
        pytest.param({"retry-after-ms": "x", "retry-after": "2"}, "2", id="bad-ms"),
        pytest.param({"retry-after-ms": "-5", "retry-after": "2"}, "2", id="negative-ms"),
        pytest.param({"retry-after-ms": "1e400", "retry-after": "2"}, "2", id="infinite-ms"),
        pytest.param({"retry-after-ms": "nan", "retry-after": "2"}, "2", id="nan-ms"),
        pytest.param({"retry-after": "2"}, "2", id="seconds-only"),
        pytest.param({}, None, id="none"),
    ],
)
def test_retry_after_ms_is_preferred_when_readable(
    headers: dict[str, str], value: str | None
) -> None:
    assert retry_after_header(headers) == value


# --- the router's verdict --------------------------------------------------------------------


async def test_every_upstream_429_is_a_429_with_the_soonest_retry_after(
    first: FakeOpenAI, second: FakeOpenAI, session: UpstreamClient
) -> None:
    model = model_of(
        session, upstream("first", first.base_url), upstream("second", second.base_url, priority=1)
    )
    with pytest.raises(UpstreamsRateLimited) as caught:
        await route(model)
    error = caught.value
    assert (error.status, error.type) == (429, "rate_limit_error")
    seconds, millis = retry_headers(error.headers())
    assert seconds == 3  # the soonest of 7 and 3
    assert 2000 < millis <= 3000  # what is left of it
    assert error.fallback_suggestion == "retry after 3 seconds"
    assert "rate-limited" in error.message
    assert "not this key's" in error.message
    assert SECRET not in error.message
    assert (len(first.received), len(second.received)) == (1, 1)


async def test_a_429_without_retry_after_gets_the_default_wait(
    first: FakeOpenAI, session: UpstreamClient
) -> None:
    first.default = Behavior(status=429)
    model = model_of(session, upstream("first", first.base_url))
    with pytest.raises(UpstreamsRateLimited) as caught:
        await route(model)
    seconds, millis = retry_headers(caught.value.headers())
    assert seconds == DEFAULT_RATE_WAIT == 1
    assert 0 < millis <= 1000


async def test_an_http_date_retry_after_counts(
    first: FakeOpenAI, second: FakeOpenAI, session: UpstreamClient
) -> None:
    first.default = Behavior(status=429, retry_after="60")
    second.default = Behavior(
        status=429, retry_after=email.utils.formatdate(time.time() + 30, usegmt=True)
    )
    model = model_of(
        session, upstream("first", first.base_url), upstream("second", second.base_url, priority=1)
    )
    with pytest.raises(UpstreamsRateLimited) as caught:
        await route(model)
    seconds, _ = retry_headers(caught.value.headers())
    assert 20 <= seconds <= 30  # the date's whole seconds, less the time since it was sent


async def test_429_and_5xx_is_a_503_with_the_rate_limited_one_s_wait(
    first: FakeOpenAI, second: FakeOpenAI, session: UpstreamClient
) -> None:
    first.default = Behavior(status=500)
    model = model_of(
        session, upstream("first", first.base_url), upstream("second", second.base_url, priority=1)
    )
    with pytest.raises(UpstreamsUnavailable) as caught:
        await route(model)
    error = caught.value
    assert (error.status, error.type) == (503, "service_unavailable_error")
    assert retry_headers(error.headers())[0] == 3
    assert error.fallback_suggestion == "retry after 3 seconds"
    assert "rate-limited (second)" in error.message
    assert "HTTP 500" in error.message


async def test_429_next_to_an_ejected_upstream_is_a_503_with_the_soonest_wait(
    first: FakeOpenAI, second: FakeOpenAI, session: UpstreamClient
) -> None:
    first.default = Behavior(status=500)
    model = model_of(
        session,
        upstream("first", first.base_url, health_min_requests=1, health_cooldown_seconds=2),
        upstream("second", second.base_url, priority=1, health_min_requests=100),
    )
    with pytest.raises(UpstreamsUnavailable):
        await route(model)  # "first" fails and is ejected for 2 s
    with pytest.raises(UpstreamsUnavailable) as caught:
        await route(model)
    # "first" is skipped (back in 2 s: the clock does not move), "second" asks for 3 s
    assert retry_headers(caught.value.headers()) == (2, 2000)
    assert "out of rotation" in caught.value.message
    assert len(first.received) == 1


async def test_a_chain_of_rate_limited_models_is_a_429(
    first: FakeOpenAI, second: FakeOpenAI, session: UpstreamClient
) -> None:
    one = model_of(session, upstream("first", first.base_url))
    two = model_of(session, upstream("second", second.base_url), name="two")
    with pytest.raises(UpstreamsRateLimited) as caught:
        await open_chain([one, two], call(HELLO))
    assert retry_headers(caught.value.headers())[0] == 3
    assert "'routed', 'two'" in caught.value.message


async def test_a_chain_of_a_rate_limited_and_a_failing_model_is_a_503(
    first: FakeOpenAI, second: FakeOpenAI, session: UpstreamClient
) -> None:
    second.default = Behavior(status=502)
    one = model_of(session, upstream("first", first.base_url))
    two = model_of(session, upstream("second", second.base_url), name="two")
    with pytest.raises(UpstreamsUnavailable) as caught:
        await open_chain([one, two], call(HELLO))
    assert retry_headers(caught.value.headers())[0] == 7


# --- the pause a 429 asks for ----------------------------------------------------------------


async def test_a_rate_limited_upstream_is_skipped_for_its_retry_after(
    first: FakeOpenAI, second: FakeOpenAI, session: UpstreamClient
) -> None:
    clock = Clock()
    model = model_of(
        session,
        upstream("first", first.base_url),
        upstream("second", second.base_url, priority=1),
        clock=clock,
    )
    with pytest.raises(UpstreamsRateLimited):
        await route(model)
    # within the wait they asked for, neither is sent the request: a 429 for what is left
    clock.advance(1)
    with pytest.raises(UpstreamsRateLimited) as caught:
        await route(model)
    assert retry_headers(caught.value.headers())[0] == 2  # "second" asked for 3 s, 1 s ago
    assert (len(first.received), len(second.received)) == (1, 1)
    assert model.health[1].snapshot()["rate_limited_seconds"] == 2
    # once that wait is over, "second" is tried again (and "first" still waits)
    second.default = Behavior(text="from second")
    clock.advance(2)
    opened = await route(model)
    assert opened.provider.label == "second"
    assert (len(first.received), len(second.received)) == (1, 2)
    assert "rate_limited_seconds" not in model.health[1].snapshot()


async def test_429s_are_no_failures_for_health(
    first: FakeOpenAI, session: UpstreamClient
) -> None:
    clock = Clock()
    model = model_of(session, upstream("first", first.base_url, health_min_requests=2), clock=clock)
    for _ in range(5):
        with pytest.raises(UpstreamsRateLimited):
            await route(model)
        clock.advance(7)
    snapshot = model.health[0].snapshot()
    # still in rotation: a 429 says "later", not "broken" (else a burst over an upstream's
    # limit would take it out for a whole cool-down, and clients would get 503s)
    assert (snapshot["state"], snapshot["window_failure_rate"]) == ("healthy", 0.0)
    assert len(first.received) == 5


async def test_a_probe_that_gets_a_429_leaves_the_upstream_out_of_rotation(
    first: FakeOpenAI, session: UpstreamClient
) -> None:
    """Before: the 429 counted as the trial's success and put the upstream back in rotation."""
    clock = Clock()
    first.default = Behavior(status=500)
    settings = upstream("first", first.base_url, health_min_requests=1, health_cooldown_seconds=30)
    model = model_of(session, settings, clock=clock)
    with pytest.raises(UpstreamStatus):
        await route(model)
    assert model.health[0].state is State.EJECTED
    clock.advance(30)
    first.default = Behavior(status=429)  # the trial is refused for rate
    with pytest.raises(UpstreamsRateLimited):
        await route(model)
    assert model.health[0].state is State.EJECTED
    first.default = Behavior(text="back")
    opened = await route(model)  # the next request is the trial: no new cool-down
    assert opened.provider.label == "first"
    assert model.health[0].state is State.HEALTHY
    assert len(first.received) == 3


async def test_429s_do_not_dilute_the_failure_rate(
    first: FakeOpenAI, session: UpstreamClient
) -> None:
    """Three 500s among three 429s: 100% of the outcomes that say anything are failures.
    Before: 3 failures of 6 outcomes (50%, under the 60% threshold), still in rotation."""
    first.script = [Behavior(status=429), Behavior(status=500)] * 3
    settings = upstream("first", first.base_url, health_min_requests=3, health_failure_rate=0.6)
    model = model_of(session, settings)
    for _ in range(6):
        with pytest.raises((UpstreamStatus, UpstreamsRateLimited)):
            await route(model)
    assert model.health[0].state is State.EJECTED
    assert len(first.received) == 6


async def test_a_pause_lasts_at_most_a_cool_down(
    first: FakeOpenAI, session: UpstreamClient
) -> None:
    first.default = Behavior(status=429, retry_after="3600")
    model = model_of(session, upstream("first", first.base_url, health_cooldown_seconds=30))
    with pytest.raises(UpstreamsRateLimited) as caught:
        await route(model)
    # it is tried again in 30 s, whatever it said: that is what the client is told
    assert retry_headers(caught.value.headers()) == (30, 30000)
    assert model.health[0].snapshot()["rate_limited_seconds"] == 30
    with pytest.raises(UpstreamsRateLimited) as caught:
        await route(model)
    assert retry_headers(caught.value.headers())[0] == 30


@pytest.mark.parametrize("value", ["1e306", "1e20", "86401"])
async def test_a_huge_retry_after_is_read_as_at_most_a_cool_down(
    first: FakeOpenAI, session: UpstreamClient, value: str
) -> None:
    """``Retry-After: 1e306`` once overflowed the ``retry-after-ms`` header (an unhandled
    ``OverflowError``: a 500), and ``1e20`` was passed on to clients as it was."""
    first.default = Behavior(status=429, retry_after=value)
    model = model_of(session, upstream("first", first.base_url, health_cooldown_seconds=30))
    with pytest.raises(UpstreamsRateLimited) as caught:
        await route(model)
    seconds, millis = retry_headers(caught.value.headers())
    assert seconds == 30
    assert 29000 < millis <= 30000
    assert caught.value.fallback_suggestion == "retry after 30 seconds"


@pytest.mark.parametrize(
    ("seconds", "header"),
    [
        pytest.param(math.inf, (86400, 86400000), id="infinite"),
        pytest.param(1e306, (86400, 86400000), id="huge"),
        pytest.param(math.nan, (1, 0), id="nan"),
        pytest.param(-5.0, (1, 0), id="negative"),
        pytest.param(2.5, (3, 2500), id="plain"),
    ],
)
@pytest.mark.parametrize("error", [UpstreamsRateLimited, UpstreamsUnavailable])
def test_retry_headers_are_bounded_for_any_wait(
    error: type[UpstreamsRateLimited | UpstreamsUnavailable],
    seconds: float,
    header: tuple[int, int],
) -> None:
    raised = error("nothing answers", retry_after=seconds)
    assert retry_headers(raised.headers()) == header
    assert raised.fallback_suggestion == f"retry after {header[0]} seconds"


async def test_a_429_without_retry_after_is_no_pause(
    first: FakeOpenAI, session: UpstreamClient
) -> None:
    first.default = Behavior(status=429)
    model = model_of(session, upstream("first", first.base_url))
    for _ in range(2):
        with pytest.raises(UpstreamsRateLimited):
            await route(model)
    assert len(first.received) == 2


# --- through a real gateway, with the OpenAI SDK ---------------------------------------------


@pytest.fixture
def gateway(first: FakeOpenAI, second: FakeOpenAI, tmp_path: Path) -> Iterator[GatewayProcess]:
    upstreams = [
        {
            "provider": "openai",
            "name": name,
            "base_url": fake.base_url,
            "api_key": SECRET,
            "priority": i,
            "retries": 0,
        }
        for i, (name, fake) in enumerate((("first", first), ("second", second)))
    ]
    model = {"pricing": {"input": "1", "output": "1"}, "upstreams": upstreams}
    config = {"models": {"routed": model}, "ledger_flush_seconds": 0.05}
    gateway = GatewayProcess(tmp_path, config).start()
    yield gateway
    gateway.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["completion", "stream"])
def test_the_openai_sdk_sees_a_429_with_retry_after(gateway: GatewayProcess, stream: bool) -> None:
    key = gateway.create_key("--credits", "10")["key"]
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="routed", messages=[{"role": "user", "content": "hello"}], stream=stream
        )
    error = caught.value
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == "3"
    assert 2000 < int(error.response.headers["retry-after-ms"]) <= 3000
    assert error.type == "rate_limit_error"
    body = error.response.json()
    assert body["error"]["fallback_suggestion"] == "retry after 3 seconds"
    assert SECRET not in json.dumps(body)
    assert gateway.credits(key)["used_credits"] == 0  # nothing answered, nothing charged


def test_a_huge_retry_after_reaches_the_client_as_a_429(
    gateway: GatewayProcess, first: FakeOpenAI, second: FakeOpenAI
) -> None:
    """Before: a 500 (or a dropped connection) and an ``OverflowError`` traceback each time."""
    first.default = second.default = Behavior(status=429, retry_after="1e306")
    key = gateway.create_key("--credits", "10")["key"]
    status, headers, answer = gateway.post("/v1/chat/completions", HELLO, key)
    assert (status, answer["error"]["type"]) == (429, "rate_limit_error"), answer
    assert headers["retry-after"] == "30"  # the cool-down (health_cooldown_seconds)
    assert "Traceback" not in gateway.logs()


def test_sustained_429s_stay_429s_with_their_wait(
    gateway: GatewayProcess, first: FakeOpenAI, second: FakeOpenAI
) -> None:
    key = gateway.create_key("--credits", "10")["key"]
    for _ in range(10):  # more than health_min_requests (5)
        status, headers, answer = gateway.post("/v1/chat/completions", HELLO, key)
        assert (status, answer["error"]["type"]) == (429, "rate_limit_error"), answer
        assert 1 <= int(headers["retry-after"]) <= 3
    # paused for the 3 s and 7 s they asked for, not sent 10 requests each
    assert len(first.received) + len(second.received) < 20
