"""The Azure provider: deployments, ``api-version`` and the ``api-key`` header against the fake
Azure resource; and every built-in provider's registration."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest

from relaygate.errors import UpstreamStatus
from relaygate.providers.azure import DEFAULT_API_VERSION, AzureProvider
from relaygate.providers.registry import GROUP, provider_class
from relaygate.settings import UpstreamSettings
from relaygate.upstream_http import UpstreamClient
from tests.providers import fake_azure
from tests.providers.fake_azure import FakeAzure
from tests.providers.support import call, collect, completion
from tests.support.fake_openai import Behavior


def provider(fake: FakeAzure, session: UpstreamClient, **settings: Any) -> AzureProvider:
    config: dict[str, Any] = {
        "provider": "azure",
        "name": "azure-upstream",
        "base_url": fake.resource_url,
        "api_key": fake_azure.API_KEY,
        "model": fake_azure.DEPLOYMENT,
        "options": {"api_version": fake_azure.API_VERSION},
        **settings,
    }
    return AzureProvider(UpstreamSettings(**config), session)


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
async def test_deployment_api_version_and_api_key(
    azure_upstream: FakeAzure, session: UpstreamClient, stream: bool
) -> None:
    azure_upstream.default = Behavior(text="Hello from Azure.", prompt_tokens=9)
    body = {"model": "azure-gpt", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    events = await collect(provider(azure_upstream, session), call(body, fake_azure.DEPLOYMENT))
    answer = completion(events)
    assert answer.choices[0].message.content == "Hello from Azure."
    assert answer.usage.prompt_tokens == 9
    sent = azure_upstream.received[-1]
    assert sent.path == f"/openai/deployments/{fake_azure.DEPLOYMENT}/chat/completions"
    assert azure_upstream.queries[-1] == {"api-version": fake_azure.API_VERSION}
    assert sent.headers["api-key"] == fake_azure.API_KEY
    assert "Authorization" not in sent.headers
    if stream:
        assert sent.body["stream_options"] == {"include_usage": True}


async def test_wrong_key_is_a_credentials_error(
    azure_upstream: FakeAzure, session: UpstreamClient
) -> None:
    wrong = provider(azure_upstream, session, api_key="azure-wrong-key-000000")
    body = {"model": "azure-gpt", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(UpstreamStatus) as caught:
        await collect(wrong, call(body))
    assert caught.value.upstream_status == 401
    assert not caught.value.retryable
    assert "azure-wrong" not in caught.value.message


def test_default_api_version() -> None:
    settings = UpstreamSettings(
        provider="azure", base_url="https://r.openai.azure.com/", model="dep one"
    )
    url = AzureProvider(settings, None).url()  # type: ignore[arg-type]
    assert url == (
        "https://r.openai.azure.com/openai/deployments/dep%20one/chat/completions"
        f"?api-version={DEFAULT_API_VERSION}"
    )


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        pytest.param({"model": "d"}, "base_url", id="no-base-url"),
        pytest.param({"base_url": "https://r.openai.azure.com"}, "deployment", id="no-model"),
        pytest.param(
            {"base_url": "https://r", "model": "d", "options": {"deployment": "x"}},
            "options",
            id="unknown-option",
        ),
        pytest.param(
            {"base_url": "https://r", "model": "d", "options": {"api_version": " "}},
            "api_version",
            id="empty-version",
        ),
    ],
)
def test_check_options(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        AzureProvider.check_options(UpstreamSettings(provider="azure", **settings))


@pytest.mark.parametrize(
    ("name", "target"),
    [
        pytest.param("openai", "relaygate.providers.openai:OpenAIProvider", id="openai"),
        pytest.param("azure", "relaygate.providers.azure:AzureProvider", id="azure"),
        pytest.param(
            "anthropic", "relaygate.providers.anthropic:AnthropicProvider", id="anthropic"
        ),
        pytest.param("gemini", "relaygate.providers.gemini:GeminiProvider", id="gemini"),
        pytest.param(
            "simulator", "relaygate.providers.simulator:SimulatorProvider", id="simulator"
        ),
    ],
)
def test_built_in_providers_register_through_the_entry_point_group(name: str, target: str) -> None:
    registered = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    assert registered.get(name) == target
    cls = provider_class(name)
    assert f"{cls.__module__}:{cls.__name__}" == target
    assert cls.name == name
