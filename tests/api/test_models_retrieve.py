"""``GET /v1/models/{id}`` with the OpenAI SDK: the model in OpenAI's shape, and 404 in the
contract's shape for a model the key may not use (as for one that does not exist). With
Anthropic's SDK (``x-api-key``, ``anthropic-version``): Anthropic's Models shape, paged."""

from __future__ import annotations

import json
import urllib.request

import anthropic
import openai
import pytest

from tests.support.gateway import GatewayProcess


def test_a_model_the_key_may_use_is_retrieved(gateway: GatewayProcess) -> None:
    key = gateway.create_key("--credits", "1")["key"]
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    model = client.models.retrieve("gpt-5.2")
    assert (model.id, model.object, model.owned_by) == ("gpt-5.2", "model", "relaygate")
    assert model.created > 0


@pytest.mark.parametrize("name", ["gpt-5.5", "no-such-model"], ids=["not-allowed", "unknown"])
def test_a_model_the_key_may_not_use_is_not_found(gateway: GatewayProcess, name: str) -> None:
    key = gateway.create_key("--credits", "1", "--models", "gpt-5.2")["key"]
    status, _, raw = gateway.get(f"/v1/models/{name}", key)
    error = json.loads(raw)["error"]
    assert (status, error["code"], error["type"], error["param"]) == (
        404,
        404,
        "not_found_error",
        "model",
    )
    assert error["fallback_suggestion"] == "gpt-5.2"  # the closest model the key may use
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(name)


def test_retrieving_needs_a_key(gateway: GatewayProcess) -> None:
    status, _, raw = gateway.get("/v1/models/gpt-5.2")
    assert (status, json.loads(raw)["error"]["type"]) == (401, "authentication_error")


def _claude(gateway: GatewayProcess, key: str) -> anthropic.Anthropic:
    """Anthropic's SDK: the key in ``x-api-key``, with ``anthropic-version``."""
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)


def test_anthropic_sdk_lists_the_models_with_x_api_key(gateway: GatewayProcess) -> None:
    key = gateway.create_key("--credits", "1", "--models", "gpt-5.2,gpt-5.5")["key"]
    models = list(_claude(gateway, key).models.list())
    assert [(m.id, m.type, m.display_name) for m in models] == [
        ("gpt-5.2", "model", "gpt-5.2"),
        ("gpt-5.5", "model", "gpt-5.5"),
    ]
    assert models[0].created_at.year >= 2025
    assert models[0].max_tokens == 128000


def test_anthropic_sdk_pages_through_the_models(gateway: GatewayProcess) -> None:
    """``limit`` and ``after_id``/``before_id`` as Anthropic's API: the SDK's auto-paging
    iterator follows ``has_more`` and ``last_id`` to the end."""
    key = gateway.create_key("--credits", "1")["key"]
    client = _claude(gateway, key)
    everything = [m.id for m in client.models.list()]
    assert len(everything) >= 3
    first = client.models.list(limit=2)
    assert ([m.id for m in first.data], first.has_more) == (everything[:2], True)
    assert [m.id for m in client.models.list(limit=2)] == everything  # followed page by page
    after = client.models.list(limit=1, after_id=everything[0])
    assert [m.id for m in after.data] == [everything[1]]
    before = client.models.list(limit=5, before_id=everything[2])
    assert ([m.id for m in before.data], before.has_more) == (everything[:2], False)
    with pytest.raises(anthropic.BadRequestError):
        client.models.list(limit=0)


def test_anthropic_sdk_retrieves_a_model_with_x_api_key(gateway: GatewayProcess) -> None:
    key = gateway.create_key("--credits", "1", "--models", "gpt-5.2")["key"]
    client = _claude(gateway, key)
    model = client.models.retrieve("gpt-5.2")
    assert (model.id, model.type, model.max_tokens) == ("gpt-5.2", "model", 128000)
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("gpt-5.5")  # not this key's: as unknown
    with pytest.raises(anthropic.AuthenticationError):
        _claude(gateway, "sk-not-a-key").models.retrieve("gpt-5.2")


def test_x_api_key_without_anthropic_version_gets_openai_shape(gateway: GatewayProcess) -> None:
    key = gateway.create_key("--credits", "1", "--models", "gpt-5.2")["key"]
    request = urllib.request.Request(gateway.url + "/v1/models", headers={"x-api-key": key})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
    assert body["object"] == "list"
    assert [(m["id"], m["object"]) for m in body["data"]] == [("gpt-5.2", "model")]
