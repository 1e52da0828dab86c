"""Failover through a real ``relaygate serve``: primary down, primary 429 then recovering, all
down (502, then 503 once out of rotation), recovery, and the health states in
``GET /health/details``.

Nothing here waits on a clock: the only waiting is ``GatewayProcess.wait_until`` polling.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess, free_port

SECRET = "sk-upstream-SECRET-failover-0123456789"
CHAT = "/v1/chat/completions"
HELLO = {"model": "routed", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
def primary() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(default=Behavior(text="from primary")).start()
    yield fake
    fake.stop()


@pytest.fixture
def secondary() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(default=Behavior(text="from secondary")).start()
    yield fake
    fake.stop()


def upstream(name: str, url: str, **fields: Any) -> dict[str, Any]:
    return {"provider": "openai", "name": name, "base_url": url, "api_key": SECRET, **fields}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., tuple[GatewayProcess, str]]]:
    """Start relaygate with the model ``routed`` on the given upstreams; returns it and a key."""
    started: list[GatewayProcess] = []

    def start(*upstreams: dict[str, Any]) -> tuple[GatewayProcess, str]:
        model = {"pricing": {"input": "1", "output": "2"}, "upstreams": list(upstreams)}
        config = {"models": {"routed": model}, "ledger_flush_seconds": 0.05}
        gateway = GatewayProcess(tmp_path, config).start()
        started.append(gateway)
        return gateway, str(gateway.create_key("--credits", "10")["key"])

    yield start
    for gateway in started:
        gateway.stop()


def states(gateway: GatewayProcess) -> dict[str, str]:
    status, _, raw = gateway.operator_get("/health/details")
    assert status == 200
    return {u["upstream"]: u["state"] for u in json.loads(raw)["upstreams"]["routed"]}


def streamed_text(raw: bytes) -> str:
    chunks = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith(b"data: {")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def test_primary_down_the_secondary_answers_and_is_named(
    serve: Callable[..., tuple[GatewayProcess, str]], secondary: FakeOpenAI
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gateway, key = serve(
        upstream("primary", dead), upstream("secondary", secondary.base_url, priority=1)
    )
    status, headers, answer = gateway.post(CHAT, HELLO, key)
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"] == "from secondary"
    assert lower(headers)["x-relaygate-upstream"] == "secondary"
    # streams fail over the same way, before anything reached the client
    status, headers, raw = gateway.post(CHAT, {**HELLO, "stream": True}, key)
    assert status == 200
    assert lower(headers)["x-relaygate-upstream"] == "secondary"
    assert streamed_text(raw) == "from secondary"


def test_primary_429_then_recovers(
    serve: Callable[..., tuple[GatewayProcess, str]], primary: FakeOpenAI, secondary: FakeOpenAI
) -> None:
    primary.script = [Behavior(status=429, retry_after="0")]
    gateway, key = serve(
        upstream("primary", primary.base_url), upstream("secondary", secondary.base_url, priority=1)
    )
    # the primary's 429 moves this request on to the secondary ...
    status, headers, _ = gateway.post(CHAT, HELLO, key)
    assert status == 200
    assert lower(headers)["x-relaygate-upstream"] == "secondary"
    # ... and the next request is the primary's again: one 429 does not take it out
    status, headers, answer = gateway.post(CHAT, HELLO, key)
    assert status == 200
    assert lower(headers)["x-relaygate-upstream"] == "primary"
    assert answer["choices"][0]["message"]["content"] == "from primary"
    assert states(gateway) == {"primary": "healthy", "secondary": "healthy"}


def test_a_lone_upstream_429_is_retried_after_its_retry_after(
    serve: Callable[..., tuple[GatewayProcess, str]], primary: FakeOpenAI
) -> None:
    primary.script = [Behavior(status=429, retry_after="0")]
    gateway, key = serve(upstream("primary", primary.base_url))
    status, headers, _ = gateway.post(CHAT, HELLO, key)
    assert status == 200
    assert lower(headers)["x-relaygate-upstream"] == "primary"
    assert len(primary.received) == 2


def test_all_down_is_502_then_503_once_out_of_rotation(
    serve: Callable[..., tuple[GatewayProcess, str]], primary: FakeOpenAI, secondary: FakeOpenAI
) -> None:
    primary.default = secondary.default = Behavior(status=500)
    health = {"retries": 0, "health_min_requests": 2, "health_cooldown_seconds": 300}
    gateway, key = serve(
        upstream("primary", primary.base_url, **health),
        upstream("secondary", secondary.base_url, priority=1, **health),
    )
    for _ in range(2):
        status, _, answer = gateway.post(CHAT, HELLO, key)
        assert status == 502, answer
        assert answer["error"]["type"] == "upstream_error"
        assert SECRET not in json.dumps(answer)
    assert states(gateway) == {"primary": "ejected", "secondary": "ejected"}
    _, _, raw = gateway.operator_get("/health/details")
    primary_health = json.loads(raw)["upstreams"]["routed"][0]
    assert primary_health["last_error"] == "HTTP 500"
    assert primary_health["retry_in_seconds"] > 0
    assert b"fake failure" not in raw  # no upstream message in it
    metrics = gateway.operator_get("/metrics")[2].decode()
    for name in ("primary", "secondary"):
        assert (f'relaygate_upstream_state{{model="routed",state="ejected",upstream="{name}"}}'
                " 1.0") in metrics
        assert f'relaygate_upstream_ejections{{model="routed",upstream="{name}"}} 1.0' in metrics
    tried = len(primary.received) + len(secondary.received)
    status, _, answer = gateway.post(CHAT, HELLO, key)
    assert status == 503
    assert answer["error"]["type"] == "service_unavailable_error"
    assert answer["error"]["fallback_suggestion"].startswith("retry after")
    assert len(primary.received) + len(secondary.received) == tried  # nothing was sent
    assert gateway.credits(key)["used_credits"] == 0


def test_an_ejected_primary_is_probed_and_put_back(
    serve: Callable[..., tuple[GatewayProcess, str]], primary: FakeOpenAI, secondary: FakeOpenAI
) -> None:
    primary.default = Behavior(status=503)
    health = {"retries": 0, "health_min_requests": 2, "health_cooldown_seconds": 0.2}
    gateway, key = serve(
        upstream("primary", primary.base_url, **health),
        upstream("secondary", secondary.base_url, priority=1),
    )
    for _ in range(2):
        status, headers, _ = gateway.post(CHAT, HELLO, key)
        assert (status, lower(headers)["x-relaygate-upstream"]) == (200, "secondary")
    assert states(gateway)["primary"] == "ejected"
    primary.default = Behavior(text="from primary")

    def primary_answers() -> bool:
        status, headers, _ = gateway.post(CHAT, HELLO, key)
        return status == 200 and lower(headers)["x-relaygate-upstream"] == "primary"

    gateway.wait_until(primary_answers, message="the primary back in rotation")
    assert states(gateway)["primary"] == "healthy"
