"""Shared fixtures: a fake OpenAI upstream and a real relaygate process in front of it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess

REQUIRE_SERVICES = os.environ.get("RELAYGATE_REQUIRE_SERVICES") == "1"

# Every relaygate process a test starts (in its own working directory) runs this checkout's
# code, whichever checkout the installed package points at: the source folder goes first on
# the path of every child process, as an absolute path.
_SRC = str(Path(__file__).resolve().parent.parent / "src")
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_SRC, *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != "src")]
)


def catalog(
    upstream_url: str, upstream_settings: dict[str, Any] | None = None, **overrides: Any
) -> dict[str, Any]:
    """A catalog with the contract's models on the fake upstream, plus the simulator.

    ``upstream_settings`` are added to every fake-upstream entry (health thresholds, say).
    """
    fake = {"provider": "openai", "name": "fake-openai", "base_url": upstream_url,
            "api_key": "sk-upstream-SECRET-0123456789", **(upstream_settings or {})}
    models: dict[str, Any] = {
        "gpt-5.2": {
            "pricing": {"input": "1.75", "cached_input": "0.175", "output": "14.0"},
            "max_output_tokens": 128000,
            "vision": True,
            "upstreams": [{**fake, "model": "gpt-5.2-upstream"}],
        },
        "gpt-5.5": {
            "pricing": {"input": "5", "output": "30"},
            "max_output_tokens": 128000,
            "upstreams": [fake],
        },
        "text-only": {
            "pricing": {"input": "1", "output": "2"},
            "max_output_tokens": 1000,
            "upstreams": [fake],
        },
        "unrouted": {"pricing": {"input": "1", "output": "1"}, "upstreams": []},
        "relaygate-simulator": {
            "pricing": {"input": "0.1", "output": "0.4"},
            "upstreams": [{"provider": "simulator",
                           "options": {"first_token_ms": 0, "inter_token_ms": 0}}],
        },
    }
    return {"models": models, "stream_keepalive_seconds": 0.05,
            "disconnect_drain_seconds": 2, "ledger_flush_seconds": 0.05, **overrides}


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(default=Behavior()).start()
    yield fake
    fake.stop()


@pytest.fixture
def make_gateway(
    tmp_path: Path, upstream: FakeOpenAI
) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def make(**overrides: Any) -> GatewayProcess:
        directory = tmp_path / f"gw{len(started)}"
        directory.mkdir()
        gateway = GatewayProcess(directory, catalog(upstream.base_url, **overrides)).start()
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(make_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    return make_gateway()
