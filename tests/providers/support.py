"""Helpers for provider tests: upstream configs for the fakes, and calling a provider class
directly as the router would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from relaygate.protocol.assemble import Collected
from relaygate.protocol.types import ChatCompletion
from relaygate.protocol.validate import decode_chat_request
from relaygate.providers.base import Batch, Done, Event, Provider, ProviderRequest, Started
from tests.providers import fake_anthropic, fake_azure, fake_gemini
from tests.providers.fake_anthropic import FakeAnthropic
from tests.providers.fake_azure import FakeAzure
from tests.providers.fake_gemini import FakeGemini

PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5Er"
    "kJggg=="
)
"""A 1x1 PNG, base64."""
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}
"""An OpenAI-format function tool."""


def upstreams(
    anthropic: FakeAnthropic, gemini: FakeGemini, azure: FakeAzure
) -> dict[str, dict[str, Any]]:
    """One upstream config per provider, pointing at the fakes."""
    return {
        "anthropic": {
            "provider": "anthropic",
            "name": "fake-anthropic",
            "base_url": anthropic.base_url,
            "api_key": fake_anthropic.API_KEY,
            "model": "claude-sonnet-4-5",
        },
        "gemini": {
            "provider": "gemini",
            "name": "fake-gemini",
            "base_url": gemini.base_url,
            "api_key": fake_gemini.API_KEY,
            "model": "gemini-2.5-pro",
        },
        "azure": {
            "provider": "azure",
            "name": "fake-azure",
            "base_url": azure.resource_url,
            "api_key": fake_azure.API_KEY,
            "model": fake_azure.DEPLOYMENT,
            "options": {"api_version": fake_azure.API_VERSION},
        },
    }


def call(body: dict[str, Any], upstream_model: str = "upstream-model") -> ProviderRequest:
    """A checked request as the router hands it to a provider."""
    request, raw = decode_chat_request(json.dumps(body).encode())
    return ProviderRequest(
        request=request,
        raw=raw,
        upstream_model=upstream_model,
        stream=request.stream,
        request_id="chatcmpl-test",
    )


async def collect(provider: Provider, request: ProviderRequest) -> list[Event]:
    """Every event of one answer, as the gateway would read them; checks the batches' shape:
    ``[Started]`` alone first, and ``Done`` (if sent) only at the very end."""
    batches = [list(batch) async for batch in provider.events(request)]
    assert len(batches[0]) == 1
    assert isinstance(batches[0][0], Started)
    events = [event for batch in batches[1:] for event in batch]
    assert all(not isinstance(e, Done) for e in events[:-1])
    return [e for e in events if not isinstance(e, Done)]


def completion(events: list[Event]) -> ChatCompletion:
    """The non-streaming answer the gateway would build from ``events``."""
    collected = Collected()
    for event in events:
        collected.add(event)
    return collected.completion("chatcmpl-test", "public", 0, collected.usage_or_estimate(0))


async def drain(events: AsyncIterator[Batch], seen: list[Event]) -> None:
    """Read ``events`` to the end (or the error), keeping each event in ``seen``."""
    async for batch in events:
        seen.extend(batch)
