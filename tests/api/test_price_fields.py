"""Fields that change the price (issue 11, item 12): refused with 400 naming the field before
anything is charged or sent upstream, unless the model prices them (``service_tiers``) or the
operator allows them (``allow_fields``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from relaygate.accounting.prices import Price
from relaygate.providers.base import TokenUsage
from relaygate.settings import PRICE_CHANGING_FIELDS, Pricing
from tests.conftest import catalog
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateway import GatewayProcess, credits_of, ledger

USER: dict[str, Any] = {"role": "user", "content": "hi"}
PRICED: dict[str, Any] = {
    "service_tier": "priority",
    "web_search_options": {"search_context_size": "low"},
    "audio": {"voice": "alloy", "format": "wav"},
    "modalities": ["text", "audio"],
    "prediction": {"type": "content", "content": "draft"},
    "store": True,
}
NEUTRAL: dict[str, Any] = {
    "service_tier": "auto",
    "modalities": ["text"],
    "store": False,
    "audio": None,
    "web_search_options": None,
}
TIERS = {"flex": "0.5", "priority": "2.0", "odd": "1.5"}


def test_the_list_covers_every_priced_field() -> None:
    assert set(PRICED) == set(PRICE_CHANGING_FIELDS)


@pytest.fixture
def policy_gateway(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> GatewayProcess:
    models = catalog(upstream.base_url)["models"]
    models["open-model"] = {**models["gpt-5.5"], "allow_fields": list(PRICE_CHANGING_FIELDS)}
    models["tiered"] = {
        **models["gpt-5.5"],
        "pricing": {"input": "5", "output": "30", "service_tiers": TIERS},
    }
    return make_gateway(models=models)


def test_each_price_changing_field_is_refused_by_default(
    policy_gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    gateway = policy_gateway
    created = gateway.create_key("--credits", "10")
    for field, value in PRICED.items():
        sent = {"model": "gpt-5.5", "messages": [USER], field: value}
        status, _, answer = gateway.post("/v1/chat/completions", sent, created["key"])
        assert status == 400, (field, answer)
        assert answer["error"]["param"] == field
        assert answer["error"]["type"] == "invalid_request_error"
    assert upstream.received == []
    assert ledger(gateway, created["id"]) == []
    assert credits_of(gateway, created["key"])["used_credits"] == 0


def test_neutral_values_pass(policy_gateway: GatewayProcess, upstream: FakeOpenAI) -> None:
    key = policy_gateway.create_key("--credits", "10")["key"]
    sent = {"model": "gpt-5.5", "messages": [USER], **NEUTRAL}
    status, _, answer = policy_gateway.post("/v1/chat/completions", sent, key)
    assert status == 200, answer
    assert upstream.received[-1].body["service_tier"] == "auto"
    status, _, answer = policy_gateway.post(
        "/v1/chat/completions", {**sent, "service_tier": "default"}, key
    )
    assert status == 200, answer


def test_allowed_fields_pass_through(policy_gateway: GatewayProcess, upstream: FakeOpenAI) -> None:
    key = policy_gateway.create_key("--credits", "10")["key"]
    sent = {"model": "open-model", "messages": [USER], **PRICED}
    status, _, answer = policy_gateway.post("/v1/chat/completions", sent, key)
    assert status == 200, answer
    forwarded = upstream.received[-1].body
    for field, value in PRICED.items():
        assert forwarded[field] == value, field


def test_a_tier_multiplier_changes_the_charge_exactly(
    policy_gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    gateway = policy_gateway
    usage = TokenUsage(prompt_tokens=13, completion_tokens=20)  # the fake upstream's figures
    base = Price.from_settings(Pricing(input=Decimal(5), output=Decimal(30))).cost(usage)
    assert base == 665
    # 332.5 and 997.5 micro-USD are rounded up
    for tier, expected in (("flex", 333), ("priority", 1330), ("odd", 998), ("auto", 665)):
        created = gateway.create_key("--credits", "10")
        sent = {"model": "tiered", "messages": [USER], "service_tier": tier}
        status, _, answer = gateway.post("/v1/chat/completions", sent, created["key"])
        assert status == 200, answer
        assert upstream.received[-1].body["service_tier"] == tier
        gateway.wait_until(lambda c=created: len(ledger(gateway, c["id"])) == 1, message="row")
        assert ledger(gateway, created["id"])[0]["cost_micros"] == expected, tier
        used = credits_of(gateway, created["key"])["used_credits"]
        assert used == Decimal(expected) / 1_000_000


def test_an_unlisted_tier_is_refused_on_a_tiered_model(
    policy_gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    key = policy_gateway.create_key("--credits", "10")["key"]
    sent = {"model": "tiered", "messages": [USER], "service_tier": "scale"}
    status, _, answer = policy_gateway.post("/v1/chat/completions", sent, key)
    assert status == 400
    assert answer["error"]["param"] == "service_tier"
    assert "flex" in answer["error"]["message"]
    assert upstream.received == []


def test_a_tier_multiplier_raises_the_reservation(
    policy_gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    # 1 cent covers 100 output tokens at 30 USD/1M plus the prompt, not at twice the price
    key = policy_gateway.create_key("--credits", "0.01")["key"]
    sent = {"model": "tiered", "messages": [USER], "max_tokens": 200}
    status, _, answer = policy_gateway.post("/v1/chat/completions", sent, key)
    assert status == 200, answer
    status, _, answer = policy_gateway.post(
        "/v1/chat/completions", {**sent, "service_tier": "priority"}, key
    )
    assert status == 402, answer
    assert len(upstream.received) == 1
    # The tokens the 402 says the balance affords are priced at the tier (2 x 30 USD/1M).
    left = Decimal(str(credits_of(policy_gateway, key)["remaining_credits"]))
    found = re.search(r"at most (\d+) output tokens", answer["error"]["message"])
    assert found is not None, answer
    assert int(found.group(1)) * Decimal("0.00006") <= left


def test_a_fallback_that_does_not_price_the_field_is_skipped(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    models = catalog(upstream.base_url)["models"]
    models["tiered"] = {
        **models["gpt-5.5"],
        "pricing": {"input": "5", "output": "30", "service_tiers": TIERS},
        "upstreams": [{"provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                       "api_key": "sk-x", "retries": 0, "connect_timeout": 2}],
        "fallbacks": ["gpt-5.5"],
    }
    gateway = make_gateway(models=models)
    key = gateway.create_key("--credits", "10")["key"]
    sent = {"model": "tiered", "messages": [USER], "service_tier": "flex"}
    status, _, answer = gateway.post("/v1/chat/completions", sent, key)
    assert status == 502, answer  # gpt-5.5 does not price flex: it is not tried
    assert upstream.received == []
