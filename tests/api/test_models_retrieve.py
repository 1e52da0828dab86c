"""``GET /v1/models/{id}`` with the OpenAI SDK: the model in OpenAI's shape, and 404 in the
contract's shape for a model the key may not use (as for one that does not exist)."""

from __future__ import annotations

import json

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
