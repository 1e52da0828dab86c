"""The request path's shortcuts keep their guarantees: a non-streamed answer is handed on
without an async generator, ended events are not closed again, the standard price skips the
multiplier arithmetic, and small bodies skip the bracket count, each with the same results."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from decimal import Decimal
from fractions import Fraction

import pytest

from relaygate.accounting.fields import refused_field
from relaygate.accounting.prices import Price
from relaygate.errors import InvalidRequest
from relaygate.protocol.validate import MAX_DEPTH, decode_chat_request
from relaygate.providers.base import STARTED, Batch, Provider, ProviderRequest, TextDelta
from relaygate.providers.base import TokenUsage as Usage
from relaygate.routing.catalog import CatalogModel
from relaygate.routing.health import HealthPolicy, UpstreamHealth
from relaygate.routing.router import open_upstream
from relaygate.settings import ModelSettings, Pricing, UpstreamSettings
from tests.routing.support import Clock

PRICING = Pricing(input=Decimal("1.75"), cached_input=Decimal("0.175"), output=Decimal(14))
BATCHES: list[Batch] = [[TextDelta("hello")], [TextDelta(" there"), Usage(5, 2)]]


class _Events:
    """An answer's events that count how often they are closed."""

    def __init__(self) -> None:
        self.batches = iter([STARTED, *BATCHES])
        self.closes = 0

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> Batch:
        for batch in self.batches:
            return batch
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closes += 1


class _Provider(Provider):
    name = "fake"

    def __init__(self) -> None:
        super().__init__(UpstreamSettings(provider="openai", name="fake"), None)  # type: ignore[arg-type]
        self.opened: list[_Events] = []

    def events(self, request: ProviderRequest) -> AsyncIterator[Batch]:
        events = _Events()
        self.opened.append(events)
        return events


def _model(provider: _Provider, clock: Clock) -> CatalogModel:
    health = UpstreamHealth(provider.label, HealthPolicy(), clock)
    settings = ModelSettings(pricing=PRICING)
    return CatalogModel("m", settings, Price.from_settings(PRICING), [provider], [health])


def _call(stream: bool) -> ProviderRequest:
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    request, raw = decode_chat_request(body)
    return ProviderRequest(request, raw, "m", stream, "chatcmpl-test")


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_read_to_its_end_is_not_closed_again(stream: bool) -> None:
    provider, clock = _Provider(), Clock()
    model = _model(provider, clock)
    opened = await open_upstream(model, _call(stream))
    assert [batch async for batch in opened.events] == BATCHES
    await opened.events.aclose()  # type: ignore[attr-defined]
    assert provider.opened[0].closes == 0
    assert model.health[0].snapshot()["window_requests"] == 1  # one success, counted once


async def test_a_stream_the_client_leaves_is_closed_and_counted_once() -> None:
    provider, clock = _Provider(), Clock()
    model = _model(provider, clock)
    opened = await open_upstream(model, _call(True))
    assert await anext(opened.events) == BATCHES[0]
    await opened.events.aclose()  # type: ignore[attr-defined]
    await opened.events.aclose()  # type: ignore[attr-defined]
    assert provider.opened[0].closes == 1
    snapshot = model.health[0].snapshot()
    assert (snapshot["window_requests"], snapshot["window_failure_rate"]) == (1, 0.0)


async def test_a_non_streamed_answer_is_handed_on_without_an_async_generator() -> None:
    """An async generator costs each request the event loop's first-iteration hook."""
    opened = await open_upstream(_model(_Provider(), Clock()), _call(False))
    assert not inspect.isasyncgen(opened.events)
    assert [batch async for batch in opened.events] == BATCHES
    assert [batch async for batch in opened.events] == []


def test_the_standard_price_and_a_multiplier_of_one_cost_the_same() -> None:
    price = Price.from_settings(PRICING)
    same = Price(price.input, price.cached_input, price.output, Fraction(2, 2))
    assert price.for_tier(None) is price
    assert price.for_tier("flex") is price
    for usage in (Usage(0, 0), Usage(1, 0), Usage(999_999, 3, cached_tokens=7), Usage(7, 10**9)):
        assert price.cost(usage) == same.cost(usage)
    assert price.worst_case(123_457, 4096) == same.worst_case(123_457, 4096)
    for micros in (0, 1, 10**9):
        assert price.affordable_output_tokens(micros, 100) == same.affordable_output_tokens(
            micros, 100
        )


def test_the_shortest_body_nested_too_deeply_is_refused() -> None:
    """Bodies too short to nest deeper than MAX_DEPTH skip the bracket count; the shortest
    one that can is still refused."""
    body = b'{"":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}"
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        decode_chat_request(body)


def test_a_request_without_price_changing_fields_is_refused_nothing() -> None:
    request, _ = decode_chat_request(
        b'{"model":"m","messages":[{"role":"user","content":"hi"}],"store":false}'
    )
    assert refused_field(request, ModelSettings(pricing=PRICING)) is None
    request, _ = decode_chat_request(
        b'{"model":"m","messages":[{"role":"user","content":"hi"}],"store":true}'
    )
    assert refused_field(request, ModelSettings(pricing=PRICING)) == "store"
