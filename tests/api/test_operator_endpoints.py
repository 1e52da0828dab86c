"""``/health`` is public and says only whether relaygate serves; ``/health/details`` and
``/metrics`` need the operator token, never an API key, and are off without one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from relaygate.errors import ConfigError
from relaygate.settings import settings_from_mapping
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateway import OPERATOR_TOKEN, GatewayProcess, http

OPERATOR = ("/health/details", "/metrics")


def test_public_health_says_only_that_it_serves(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    gateway = make_gateway()
    status, _, raw = gateway.get("/health")
    assert status == 200
    assert json.loads(raw) == {"status": "ok"}
    for secret_ish in (b"relaygate.db", b"gpt-5.2", b"fake-openai", b"sqlite"):
        assert secret_ish not in raw


@pytest.mark.parametrize("path", OPERATOR)
def test_operator_endpoints_refuse_everyone_but_the_operator(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI, path: str
) -> None:
    gateway = make_gateway()
    api_key = str(gateway.create_key("--unlimited")["key"])
    for credential in (None, api_key, OPERATOR_TOKEN + "x", OPERATOR_TOKEN[:-1], "", " "):
        status, _, raw = http("GET", gateway.url + path, key=credential)
        assert status == 401, (credential, raw)
        error = json.loads(raw)["error"]
        assert error["type"] == "authentication_error"
        assert error["code"] == 401
        assert "operator_token" in error["message"]
        assert OPERATOR_TOKEN not in raw.decode()
    status, _, raw = gateway.operator_get(path)
    assert status == 200
    assert b"fake-openai" in raw  # the upstream labels are there, for the operator
    gateway.stop()
    assert OPERATOR_TOKEN not in gateway.logs()


def test_details_show_the_store_models_and_upstreams(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    gateway = make_gateway()
    status, _, raw = gateway.operator_get("/health/details")
    assert status == 200
    details = json.loads(raw)
    assert details["status"] == "ok"
    assert "relaygate.db" in details["store"]
    assert details["models"]["gpt-5.2"] == ["fake-openai"]
    assert details["upstreams"]["gpt-5.2"][0]["state"] == "healthy"


@pytest.mark.parametrize("path", OPERATOR)
def test_without_an_operator_token_they_are_off(
    tmp_path: Path, upstream: FakeOpenAI, path: str
) -> None:
    gateway = GatewayProcess(tmp_path, {"operator_token": None}).start()
    try:
        api_key = str(gateway.create_key("--credits", "1")["key"])
        for credential in (None, api_key, OPERATOR_TOKEN):
            status, _, raw = http("GET", gateway.url + path, key=credential)
            assert status == 403, raw
            error = json.loads(raw)["error"]
            assert error["type"] == "permission_error"
            assert "operator_token" in error["message"]
        assert gateway.get("/health")[0] == 200
    finally:
        gateway.stop()


@pytest.mark.parametrize("token", ["short-token", " " + OPERATOR_TOKEN, ""])
def test_a_weak_operator_token_stops_start_up(token: str) -> None:
    with pytest.raises(ConfigError, match="operator_token: must be at least 16 characters"):
        settings_from_mapping({"operator_token": token}, "test.yaml", {})


def test_the_operator_token_can_come_from_the_environment() -> None:
    settings = settings_from_mapping({}, "test.yaml", {"RELAYGATE_OPERATOR_TOKEN": OPERATOR_TOKEN})
    assert settings.operator_token == OPERATOR_TOKEN
