"""``x-should-retry`` as the OpenAI SDK reads it, and CORS for browser clients (issue 15,
item 9), against a real gateway."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from relaygate.errors import ConfigError
from relaygate.settings import settings_from_mapping
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess

HELLO = [{"role": "user", "content": "hi"}]
ORIGIN = "https://app.example.com"


def counting_client(gateway: GatewayProcess, key: str) -> tuple[openai.OpenAI, list[int]]:
    """An SDK client that retries twice, and the statuses of every request it sent."""
    statuses: list[int] = []
    hooks = {"response": [lambda response: statuses.append(response.status_code)]}
    client = openai.OpenAI(
        base_url=gateway.url + "/v1",
        api_key=key,
        max_retries=2,
        http_client=httpx.Client(event_hooks=hooks),
    )
    return client, statuses


def raw(
    gateway: GatewayProcess, method: str, path: str, headers: dict[str, str], body: Any = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        data = None if body is None else json.dumps(body)
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


# --- x-should-retry --------------------------------------------------------------------------


def test_the_sdk_sends_a_permanent_503_once(
    make_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = make_gateway()
    key = gateway.create_key("--credits", "10")["key"]
    client, statuses = counting_client(gateway, key)
    with client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="unrouted", messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.status_code == 503
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert statuses == [503]  # without the header, the SDK sent it three times


@pytest.mark.parametrize(
    ("body", "auth", "status"),
    [
        pytest.param({"model": "gpt-5.2", "messages": "x"}, True, 400, id="400"),
        pytest.param({"model": "gpt-5.2", "messages": HELLO}, False, 401, id="401"),
        pytest.param({"model": "nope", "messages": HELLO}, True, 404, id="404"),
    ],
)
def test_client_errors_say_not_to_retry(
    make_gateway: Callable[..., GatewayProcess], body: Any, auth: bool, status: int
) -> None:
    gateway = make_gateway()
    key = gateway.create_key("--credits", "10")["key"] if auth else "sk-wrong"
    got, headers, _ = raw(
        gateway, "POST", "/v1/chat/completions",
        {"authorization": f"Bearer {key}", "content-type": "application/json"}, body,
    )  # fmt: skip
    assert got == status
    assert headers["x-should-retry"] == "false"


def test_a_failing_upstream_says_retry_and_the_sdk_does(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    gateway = make_gateway(upstream_settings={"retries": 0, "health_min_requests": 1000})
    key = gateway.create_key("--credits", "10")["key"]
    upstream.default = Behavior(status=500)
    client, statuses = counting_client(gateway, key)
    with client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-5.5", messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.response.headers["x-should-retry"] == "true"
    assert statuses == [502, 502, 502]
    assert len(upstream.received) == 3


def test_an_upstreams_own_refusal_is_not_retried(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    gateway = make_gateway(upstream_settings={"retries": 0, "health_min_requests": 1000})
    key = gateway.create_key("--credits", "10")["key"]
    upstream.default = Behavior(status=400, error_body='{"error": {"message": "no"}}')
    client, statuses = counting_client(gateway, key)
    with client, pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-5.5", messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(statuses) == 1
    assert len(upstream.received) == 1


# --- CORS ------------------------------------------------------------------------------------


def test_a_preflight_from_an_allowed_origin_gets_204_and_what_it_asked(
    make_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = make_gateway(cors_allowed_origins=[ORIGIN])
    status, headers, body = raw(
        gateway, "OPTIONS", "/v1/chat/completions",
        {"origin": ORIGIN, "access-control-request-method": "POST",
         "access-control-request-headers": "authorization, content-type, x-stainless-os"},
    )  # fmt: skip
    assert (status, body) == (204, b"")
    assert headers["access-control-allow-origin"] == ORIGIN
    assert headers["access-control-allow-methods"] == "POST"
    assert headers["access-control-allow-headers"] == "authorization, content-type, x-stainless-os"
    assert headers["access-control-max-age"] == "600"
    assert "Origin" in headers.get_all("vary")
    assert "access-control-allow-credentials" not in headers


def test_answers_to_an_allowed_origin_carry_cors_headers_errors_included(
    make_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = make_gateway(cors_allowed_origins=[ORIGIN, "http://localhost:3000"])
    key = gateway.create_key("--credits", "10")["key"]
    status, headers, _ = raw(gateway, "GET", "/v1/models",
                             {"origin": ORIGIN, "authorization": f"Bearer {key}"})  # fmt: skip
    assert status == 200
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in headers["access-control-expose-headers"]
    status, headers, body = raw(gateway, "POST", "/v1/chat/completions",
                                {"origin": ORIGIN, "authorization": "Bearer sk-wrong"},
                                {"model": "gpt-5.2", "messages": HELLO})  # fmt: skip
    assert status == 401
    assert json.loads(body)["error"]["type"] == "authentication_error"
    assert headers["access-control-allow-origin"] == ORIGIN
    assert "x-should-retry" in headers["access-control-expose-headers"]


def test_another_origin_gets_no_cors_headers(
    make_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = make_gateway(cors_allowed_origins=[ORIGIN])
    ask = {"origin": "https://evil.example", "access-control-request-method": "POST"}
    status, headers, _ = raw(gateway, "OPTIONS", "/v1/chat/completions", ask)
    assert status == 403
    assert "access-control-allow-origin" not in headers
    status, headers, _ = raw(gateway, "GET", "/v1/models", {"origin": "https://evil.example"})
    assert status == 401
    assert "access-control-allow-origin" not in headers


def test_cors_is_off_by_default(make_gateway: Callable[..., GatewayProcess]) -> None:
    gateway = make_gateway()
    ask = {"origin": ORIGIN, "access-control-request-method": "POST"}
    status, headers, _ = raw(gateway, "OPTIONS", "/v1/chat/completions", ask)
    assert status == 405
    assert "access-control-allow-origin" not in headers
    _, headers, _ = raw(gateway, "GET", "/v1/models", {"origin": ORIGIN})
    assert "access-control-allow-origin" not in headers


def test_any_origin_is_star_and_never_with_credentials(
    make_gateway: Callable[..., GatewayProcess],
) -> None:
    gateway = make_gateway(cors_allowed_origins=["*"])
    ask = {"origin": ORIGIN, "access-control-request-method": "GET"}
    status, headers, _ = raw(gateway, "OPTIONS", "/v1/models", ask)
    assert status == 204
    assert headers["access-control-allow-origin"] == "*"
    assert headers["access-control-allow-methods"] == "GET, HEAD"
    assert "access-control-allow-credentials" not in headers


@pytest.mark.parametrize(
    "origin", ["app.example.com", "https://app.example.com/", "https://app.example.com/x", ""]
)
def test_an_origin_that_is_not_one_is_a_config_error(origin: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cors_allowed_origins\[0\]"):
        settings_from_mapping({"cors_allowed_origins": [origin]}, "c.yaml", {})
