"""Fake Anthropic, Gemini and Azure upstreams (one each per module), a relaygate in front of
them, and helpers to call a provider class directly."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from relaygate.upstream_http import UpstreamClient
from tests.providers import fake_anthropic, fake_gemini
from tests.providers.fake_anthropic import FakeAnthropic
from tests.providers.fake_azure import FakeAzure
from tests.providers.fake_gemini import FakeGemini
from tests.providers.support import upstreams
from tests.support.fake_openai import Behavior
from tests.support.gateway import GatewayProcess

PRICING = {"input": "1", "cached_input": "0.1", "output": "4"}


@pytest.fixture(scope="module")
def anthropic_upstream() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gemini_upstream() -> Iterator[FakeGemini]:
    fake = FakeGemini()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def azure_upstream() -> Iterator[FakeAzure]:
    fake = FakeAzure(default=Behavior())
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def fresh_upstreams(
    anthropic_upstream: FakeAnthropic, gemini_upstream: FakeGemini, azure_upstream: FakeAzure
) -> Iterator[None]:
    """Every test starts with default replies and empty records, and ends with no request or
    answer that the vendors' SDK types reject."""
    anthropic_upstream.reset(fake_anthropic.Reply())
    gemini_upstream.reset(fake_gemini.Reply())
    azure_upstream.default = Behavior()
    azure_upstream.script.clear()
    azure_upstream.received.clear()
    azure_upstream.queries.clear()
    yield
    assert anthropic_upstream.problems == []
    assert gemini_upstream.problems == []


@pytest.fixture(scope="module")
def provider_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    anthropic_upstream: FakeAnthropic,
    gemini_upstream: FakeGemini,
    azure_upstream: FakeAzure,
) -> Iterator[GatewayProcess]:
    """relaygate serving one public model per provider: ``claude``, ``gemini``, ``azure-gpt``."""
    configs = upstreams(anthropic_upstream, gemini_upstream, azure_upstream)
    public = {"claude": "anthropic", "gemini": "gemini", "azure-gpt": "azure"}
    models = {
        name: {
            "pricing": PRICING,
            "max_output_tokens": 64000,
            "vision": True,
            "upstreams": [configs[provider]],
        }
        for name, provider in public.items()
    }
    directory: Path = tmp_path_factory.mktemp("providers-gateway")
    gateway = GatewayProcess(
        directory,
        {"models": models, "stream_keepalive_seconds": 0.05, "ledger_flush_seconds": 0.05},
    ).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def gateway_key(provider_gateway: GatewayProcess) -> str:
    return str(provider_gateway.create_key("--credits", "100")["key"])


@pytest.fixture
async def session() -> AsyncIterator[UpstreamClient]:
    async with UpstreamClient() as client:
        yield client
