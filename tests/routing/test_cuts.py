"""Answers an upstream breaks off after accepting the request (issue 11, item 19), against real
fake upstreams on loopback: the cut is a failure in that upstream's health, recorded when the
answer ends (one outcome per request); a non-streamed one fails over to the next upstream and is
recorded as an unbilled attempt (log line and metrics); a stream ends with the error.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from relaygate.accounting.estimate import prompt_token_guess
from relaygate.accounting.prices import Price
from relaygate.errors import UpstreamError
from relaygate.metrics import RoutingMetrics
from relaygate.providers.base import Batch, EncodedText, TextDelta, TokenUsage
from relaygate.providers.openai import OpenAIProvider
from relaygate.routing.catalog import CatalogModel
from relaygate.routing.fallback import open_chain
from relaygate.routing.health import HealthPolicy, State, UpstreamHealth
from relaygate.routing.router import Opened, open_upstream
from relaygate.settings import ModelSettings, Pricing, UpstreamSettings
from relaygate.upstream_http import UpstreamClient
from tests.providers.support import call
from tests.routing.cutting import CuttingOpenAI
from tests.routing.support import Clock
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess, credits_of

SECRET = "sk-upstream-SECRET-cuts-0123456789"
CHAT = "/v1/chat/completions"
PRICING = Pricing(input=Decimal(1), output=Decimal(1))
HELLO = {"model": "routed", "messages": [{"role": "user", "content": "hello there"}]}


async def no_sleep(seconds: float) -> None:
    pass


@pytest.fixture
def cutter() -> Iterator[CuttingOpenAI]:
    fake = CuttingOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def healthy() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(default=Behavior(text="from healthy")).start()
    yield fake
    fake.stop()


@pytest.fixture
async def session() -> AsyncIterator[UpstreamClient]:
    async with UpstreamClient() as client:
        yield client


@pytest.fixture
def metrics() -> RoutingMetrics:
    return RoutingMetrics(CollectorRegistry())


def upstream(name: str, url: str, **fields: Any) -> UpstreamSettings:
    fields = {"health_min_requests": 3, "health_cooldown_seconds": 30, **fields}
    return UpstreamSettings(
        provider="openai", name=name, base_url=url, api_key=SECRET, model=name, **fields
    )


def model_of(session: UpstreamClient, *upstreams: UpstreamSettings) -> CatalogModel:
    clock = Clock()
    providers = [OpenAIProvider(settings, session) for settings in upstreams]
    health = [
        UpstreamHealth(p.label, HealthPolicy.from_settings(p.settings), clock) for p in providers
    ]
    return CatalogModel(
        "routed", ModelSettings(pricing=PRICING), Price.from_settings(PRICING), providers, health
    )


async def route(
    model: CatalogModel, metrics: RoutingMetrics | None = None, **fields: Any
) -> Opened:
    return await open_upstream(
        model, call({**HELLO, **fields}), sleep=no_sleep, rng=random.Random(1), metrics=metrics
    )


def text_of(batches: list[Batch]) -> str:
    text = []
    for event in (e for batch in batches for e in batch):
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, EncodedText):  # passed-through JSON string literals
            text += [json.loads(literal) for literal in event.literals]
    return "".join(text)


def window(model: CatalogModel, index: int) -> tuple[int, float]:
    snapshot = model.health[index].snapshot()
    return snapshot["window_requests"], snapshot["window_failure_rate"]


def sample(metrics: RoutingMetrics, name: str, **labels: str) -> float | None:
    value: float | None = metrics.registry.get_sample_value(name, labels)
    return value


# --- non-streamed ----------------------------------------------------------------------------


async def test_a_cut_body_fails_over_and_is_recorded_as_unbilled(
    cutter: CuttingOpenAI,
    healthy: FakeOpenAI,
    session: UpstreamClient,
    metrics: RoutingMetrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = model_of(
        session,
        upstream("cutter", cutter.base_url),
        upstream("healthy", healthy.base_url, priority=1),
    )
    with caplog.at_level(logging.WARNING, "relaygate.routing"):
        opened = await route(model, metrics)
    # the whole answer was read within the routing attempt: what comes out is complete
    assert opened.provider.label == "healthy"
    batches = [batch async for batch in opened.events]
    assert text_of(batches) == "from healthy"
    assert any(isinstance(e, TokenUsage) for batch in batches for e in batch)
    assert len(cutter.received) == 1  # a cut is not retried on the upstream that cut
    assert window(model, 0) == (1, 1.0)  # a failure for the cutter ...
    assert window(model, 1) == (1, 0.0)  # ... and a success for the one that answered
    guess = prompt_token_guess(call(HELLO).request)
    labels = {"model": "routed", "upstream": "cutter"}
    assert sample(metrics, "relaygate_unbilled_attempts_total", **labels) == 1
    assert sample(metrics, "relaygate_unbilled_tokens_total", **labels) == guess
    assert sample(metrics, "relaygate_upstream_cut_answers_total", **labels, stream="false") == 1
    [line] = [r.getMessage() for r in caplog.records if "unbilled_attempt" in r.getMessage()]
    assert "upstream cutter broke off its answer" in line
    assert f"about {guess} tokens" in line
    assert SECRET not in caplog.text


async def test_the_cutting_upstream_is_ejected_after_min_requests(
    cutter: CuttingOpenAI, healthy: FakeOpenAI, session: UpstreamClient
) -> None:
    model = model_of(
        session,
        upstream("cutter", cutter.base_url),
        upstream("healthy", healthy.base_url, priority=1),
    )
    answered = []
    for _ in range(10):
        opened = await route(model)
        answered.append((opened.provider.label, text_of([b async for b in opened.events])))
    assert answered == [("healthy", "from healthy")] * 10  # 10 of 10 answered
    assert model.health[0].state is State.EJECTED
    assert len(cutter.received) == 3  # health_min_requests, then out of rotation


async def test_a_lone_cutting_upstream_is_a_502(
    cutter: CuttingOpenAI, session: UpstreamClient, metrics: RoutingMetrics
) -> None:
    model = model_of(session, upstream("cutter", cutter.base_url))
    with pytest.raises(UpstreamError) as caught:
        await route(model, metrics)
    assert (caught.value.status, caught.value.type) == (502, "upstream_error")
    assert "cutter" in caught.value.message
    assert window(model, 0) == (1, 1.0)
    labels = {"model": "routed", "upstream": "cutter"}
    assert sample(metrics, "relaygate_unbilled_attempts_total", **labels) == 1


async def test_a_failed_attempt_then_a_cut_is_one_outcome(
    healthy: FakeOpenAI, session: UpstreamClient
) -> None:
    # a 500, then (on the retry) an answer cut mid-body: one request, one failure
    cutting = CuttingOpenAI(script=[Behavior(status=500)]).start()
    try:
        model = model_of(
            session,
            upstream("cutter", cutting.base_url, retries=2),
            upstream("healthy", healthy.base_url, priority=1),
        )
        opened = await route(model)
        assert opened.provider.label == "healthy"
    finally:
        cutting.stop()
    assert window(model, 0) == (1, 1.0)


async def test_a_fallback_model_answers_when_every_upstream_cuts(
    cutter: CuttingOpenAI, healthy: FakeOpenAI, session: UpstreamClient
) -> None:
    first = model_of(session, upstream("cutter", cutter.base_url))
    second = model_of(session, upstream("healthy", healthy.base_url))
    second.name = "second"
    model, opened = await open_chain([first, second], call(HELLO))
    assert (model.name, opened.provider.label) == ("second", "healthy")


# --- streamed --------------------------------------------------------------------------------


async def test_a_stream_is_judged_when_it_ends_not_when_it_opens(
    healthy: FakeOpenAI, session: UpstreamClient
) -> None:
    model = model_of(session, upstream("healthy", healthy.base_url))
    opened = await route(model, stream=True)
    assert window(model, 0) == (0, 0.0)  # opened, not judged yet
    batches = [batch async for batch in opened.events]
    assert text_of(batches) == "from healthy"
    assert window(model, 0) == (1, 0.0)


async def test_a_cut_stream_is_a_failure_of_its_upstream(
    cutter: CuttingOpenAI,
    session: UpstreamClient,
    metrics: RoutingMetrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = model_of(session, upstream("cutter", cutter.base_url))
    for _ in range(3):
        opened = await route(model, metrics, stream=True)
        with pytest.raises(UpstreamError):
            [batch async for batch in opened.events]
        await opened.events.aclose()  # type: ignore[attr-defined]  # as the stream relay does
    assert model.health[0].state is State.EJECTED  # 3 outcomes, 3 failures
    labels = {"model": "routed", "upstream": "cutter"}
    assert sample(metrics, "relaygate_upstream_cut_answers_total", **labels, stream="true") == 3
    # a stream's cut reached its client, who is charged for it: not an unbilled attempt
    assert sample(metrics, "relaygate_unbilled_attempts_total", **labels) is None
    assert "broke off a streamed answer" in caplog.text


async def test_a_stream_the_client_leaves_is_no_failure(
    healthy: FakeOpenAI, session: UpstreamClient
) -> None:
    healthy.default = Behavior(text="a long answer " * 20, chunks=20)
    model = model_of(session, upstream("healthy", healthy.base_url))
    opened = await route(model, stream=True)
    await anext(opened.events)
    await opened.events.aclose()  # type: ignore[attr-defined]
    assert window(model, 0) == (1, 0.0)


# --- through a real gateway ------------------------------------------------------------------


def gateway_config(cutter: CuttingOpenAI, healthy: FakeOpenAI) -> dict[str, Any]:
    upstreams = [
        {
            "provider": "openai",
            "name": "cutter",
            "base_url": cutter.base_url,
            "api_key": SECRET,
            "health_min_requests": 3,
            "health_cooldown_seconds": 300,
        },
        {
            "provider": "openai",
            "name": "healthy",
            "base_url": healthy.base_url,
            "api_key": SECRET,
            "priority": 1,
        },
    ]
    model = {"pricing": {"input": "1", "output": "2"}, "upstreams": upstreams}
    # two models on the same two upstreams: each model has its own health trackers
    return {"models": {"plain": model, "streamed": model}, "ledger_flush_seconds": 0.05}


def streamed_ok(raw: Any) -> bool:
    """A complete stream from the healthy upstream: its text, then ``[DONE]``."""
    lines = raw.splitlines() if isinstance(raw, bytes) else []
    chunks = [json.loads(line[6:]) for line in lines if line.startswith(b"data: {")]
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    return text == "from healthy" and lines[-2:] == [b"data: [DONE]", b""]


def test_cutting_upstream_next_to_a_healthy_one_through_the_gateway(
    cutter: CuttingOpenAI, healthy: FakeOpenAI, tmp_path: Path
) -> None:
    gateway = GatewayProcess(tmp_path, gateway_config(cutter, healthy)).start()
    try:
        key = gateway.create_key("--credits", "10")["key"]
        plain = [gateway.post(CHAT, {**HELLO, "model": "plain"}, key) for _ in range(10)]
        ok = sum(
            status == 200 and answer["choices"][0]["message"]["content"] == "from healthy"
            for status, _, answer in plain
        )
        cut = len(cutter.received)
        assert (ok, cut) == (10, 3), f"non-streamed: {ok}/10 answered, cutter tried {cut} times"
        # the key pays for the 10 answers it got (13 + 20 tokens at 1 and 2 USD per 1M) and
        # nothing for the 3 cut attempts
        gateway.wait_until(lambda: credits_of(gateway, key)["used_credits"] == Decimal("0.00053"))
        streamed = [
            gateway.post(CHAT, {**HELLO, "model": "streamed", "stream": True}, key)
            for _ in range(10)
        ]
        ok = sum(status == 200 and streamed_ok(raw) for status, _, raw in streamed)
        cut = len(cutter.received) - 3
        # a stream is the client's once it started: the 3 cuts reach it as SSE errors, then
        # the cutter is out of rotation
        assert (ok, cut) == (7, 3), f"streamed: {ok}/10 complete, cutter tried {cut} times"
        assert all(b'"error"' in raw for _, _, raw in streamed[:3])
    finally:
        gateway.stop()
    logs = gateway.logs()
    assert logs.count("status unbilled_attempt") == 3
    assert logs.count("broke off a streamed answer") == 3
    assert SECRET not in logs
