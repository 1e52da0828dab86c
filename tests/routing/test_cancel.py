"""A request cancelled during an attempt (the shutdown deadline; issue 11, item 20 and the
review of it): what a non-streamed answer had delivered and the upstream it was on reach the
settle, and a trial request gives its slot back (a cancellation is neither a success nor a
failure)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import aiohttp
import pytest

from relaygate.accounting.prices import Price
from relaygate.providers.base import (
    STARTED,
    Batch,
    Provider,
    ProviderRequest,
    TextDelta,
    TokenUsage,
)
from relaygate.routing.catalog import CatalogModel
from relaygate.routing.health import HealthPolicy, State, UpstreamHealth
from relaygate.routing.router import AnswerCancelled, open_upstream
from relaygate.settings import ModelSettings, Pricing, UpstreamSettings
from tests.providers.support import call
from tests.routing.support import Clock
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess, ledger

PRICING = Pricing(input=Decimal(1), output=Decimal(1))
HELLO = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


class Trickle(Provider):
    """Starts its answer, sends two words in two batches, then waits until cancelled."""

    name = "trickle"

    def __init__(self, settings: UpstreamSettings) -> None:
        super().__init__(settings, None)  # type: ignore[arg-type]
        self.sent = asyncio.Event()

    async def events(self, request: ProviderRequest) -> AsyncIterator[Batch]:
        yield STARTED
        yield [TextDelta("one ")]
        yield [TextDelta("two ")]
        self.sent.set()
        await asyncio.Event().wait()
        yield []


async def no_sleep(seconds: float) -> None:
    pass


async def test_a_cancelled_non_stream_carries_what_it_received_and_frees_its_trial() -> None:
    clock = Clock()
    provider = Trickle(UpstreamSettings(provider="simulator", name="trickle"))
    health = UpstreamHealth("trickle", HealthPolicy(min_requests=1, cooldown_seconds=30), clock)
    health.record(False, "HTTP 500")
    clock.advance(30)  # ejected, its cool-down over: the next request is its trial
    model = CatalogModel(
        "m", ModelSettings(pricing=PRICING), Price.from_settings(PRICING), [provider], [health]
    )
    request = call(HELLO)
    task = asyncio.create_task(open_upstream(model, request, sleep=no_sleep))
    await asyncio.wait_for(provider.sent.wait(), 30)
    assert health.state is State.PROBING
    task.cancel()
    with pytest.raises(AnswerCancelled) as caught:
        await task
    cancelled = caught.value
    assert (cancelled.model, cancelled.upstream) == (model, "trickle")
    assert cancelled.received.usage_or_estimate(7) == TokenUsage(
        prompt_tokens=7, completion_tokens=2
    )  # the prompt estimate plus the tokens received
    assert request.upstream_model == "m"
    # the trial's slot is given back: still out of rotation, and the next request probes it
    # (before: stuck "probing" until a whole cool-down had passed)
    assert health.state is State.EJECTED
    assert health.acquire()


async def test_a_non_stream_cut_by_the_deadline_is_settled_on_its_upstream(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    """Before: the ``cancelled`` row of a non-stream cut before its answer had no upstream."""
    gateway = make_gateway(shutdown_grace_seconds=0.5)
    key = gateway.create_key("--credits", "10")
    upstream.script = [Behavior(answer_delay=5)]  # past the deadline
    body = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "a long answer"}]}
    headers = {"authorization": f"Bearer {key['key']}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        posting = asyncio.create_task(
            session.post(gateway.url + "/v1/chat/completions", json=body, headers=headers)
        )
        async with asyncio.timeout(30):
            while not upstream.received:
                await asyncio.sleep(0.02)  # until the request has reached the upstream
        assert gateway.process is not None
        gateway.process.terminate()
        async with await posting as response:
            status, answer = response.status, await response.read()
    assert gateway.process.wait(30) in (0, -15)
    assert status == 503, answer
    assert json.loads(answer)["error"]["type"] == "service_unavailable_error"
    [row] = ledger(gateway, key["id"])
    assert (row["status"], row["upstream"], row["upstream_model"]) == (
        "cancelled",
        "fake-openai",
        "gpt-5.2-upstream",
    )
    assert row["cost_micros"] > 0  # the prompt estimate
    assert "Traceback" not in gateway.logs()
