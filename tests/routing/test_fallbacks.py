"""Model fallbacks, from the config and from the request's ``models`` array."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from decimal import Decimal
from typing import Any

import yaml

from relaygate.accounting.prices import Price
from relaygate.providers.base import TokenUsage
from relaygate.settings import Pricing
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess, free_port

CHAT = "/v1/chat/completions"
GPT55 = Price.from_settings(Pricing(input=Decimal("5"), output=Decimal("30")))


def dead_primary(gateway_config: dict[str, Any], fallbacks: list[str] | None = None) -> None:
    """Point gpt-5.2 at a closed port (and give it ``fallbacks``)."""
    model = gateway_config["models"]["gpt-5.2"]
    model["upstreams"] = [{"provider": "openai", "name": "dead", "retries": 0,
                           "base_url": f"http://127.0.0.1:{free_port()}/v1"}]
    if fallbacks is not None:
        model["fallbacks"] = fallbacks


def ledger_rows(gateway: GatewayProcess) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(gateway.directory / "relaygate.db")) as db:
        return db.execute("SELECT request_id, model, upstream, cost_micros, status FROM ledger"
                          ).fetchall()


def start(make_gateway: Callable[..., GatewayProcess], fallbacks: list[str] | None) -> Any:
    gateway = make_gateway()
    gateway.stop()
    config = yaml.safe_load(gateway.config_path.read_text())
    dead_primary(config, fallbacks)
    gateway.config_path.write_text(json.dumps(config))
    return gateway.start()


def test_configured_fallback_answers_and_is_charged_its_own_price(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    upstream.default = Behavior(prompt_tokens=10, completion_tokens=20)
    gateway = start(make_gateway, ["gpt-5.5"])
    key = gateway.create_key("--credits", "5")
    status, headers, answer = gateway.post(CHAT, {
        "model": "gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}, key["key"])
    assert status == 200, answer
    assert answer["model"] == "gpt-5.5"
    assert headers["x-relaygate-model"] == "gpt-5.5"
    assert headers["x-relaygate-upstream"] == "fake-openai"
    cost = GPT55.cost(TokenUsage(prompt_tokens=10, completion_tokens=20))
    gateway.wait_until(lambda: any(r[4] == "ok" for r in ledger_rows(gateway)))
    (row,) = [r for r in ledger_rows(gateway) if r[4] == "ok"]
    assert row[0] == answer["id"]
    assert (row[1], row[2], row[3]) == ("gpt-5.5", "fake-openai", cost)


def test_the_requests_models_array_is_the_chain_and_is_not_forwarded(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    gateway = start(make_gateway, None)
    key = gateway.create_key("--credits", "5")
    request = {"model": "gpt-5.2", "models": ["gpt-5.5"], "stream": True,
               "messages": [{"role": "user", "content": "hi"}]}
    status, headers, raw = gateway.post(CHAT, request, key["key"])
    assert status == 200
    assert headers["x-relaygate-model"] == "gpt-5.5"
    assert b'"model":"gpt-5.5"' in raw
    assert raw.rstrip().endswith(b"data: [DONE]")
    assert "models" not in upstream.received[-1].body


def test_without_a_fallback_the_dead_primary_is_a_502(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    gateway = start(make_gateway, None)
    key = gateway.create_key("--credits", "5")
    status, _, answer = gateway.post(CHAT, {
        "model": "gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}, key["key"])
    assert status == 502, answer
    assert answer["error"]["type"] == "upstream_error"
    assert upstream.received == []


def test_models_entries_are_checked_like_the_model(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    gateway = make_gateway()
    limited = gateway.create_key("--credits", "5", "--models", "gpt-5.2")
    base = {"model": "gpt-5.2", "messages": [{"role": "user", "content": "hi"}]}
    status, _, answer = gateway.post(CHAT, {**base, "models": ["gpt-5.5"]}, limited["key"])
    assert status == 403, answer
    assert answer["error"]["param"] == "models[0]"
    status, _, answer = gateway.post(CHAT, {**base, "models": ["gpt-9"]}, limited["key"])
    assert status == 404, answer
    assert answer["error"]["param"] == "models[0]"
    status, _, answer = gateway.post(CHAT, {**base, "models": []}, limited["key"])
    assert status == 400, answer
    assert upstream.received == []


def test_the_reservation_covers_the_dearest_model_of_the_chain(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    gateway = make_gateway()
    # 100 output tokens: gpt-5.2 (14/M) reserves ~$0.0014, gpt-5.5 (30/M) ~$0.003
    key = gateway.create_key("--credits", "0.002")
    base = {"model": "gpt-5.2", "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}]}
    assert gateway.post(CHAT, base, key["key"])[0] == 200
    status, _, answer = gateway.post(CHAT, {**base, "models": ["gpt-5.5"]}, key["key"])
    assert status == 402, answer
