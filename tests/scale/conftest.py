"""Fixtures for several relaygate processes sharing one PostgreSQL and one Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import catalog
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateway import GatewayProcess
from tests.support.services import REDIS_URL, create_database, drop_database, need


@pytest.fixture
def shared_pg() -> Iterator[str]:
    url, name = create_database()
    yield url
    drop_database(name)


@pytest.fixture
def shared_redis() -> str:
    need("Redis", 6379)
    return REDIS_URL


Replicas = Callable[..., list[GatewayProcess]]


@pytest.fixture
def replicas(
    tmp_path: Path, upstream: FakeOpenAI, shared_pg: str, shared_redis: str
) -> Iterator[Replicas]:
    """``replicas(n, **config)``: n gateways on the same database, Redis and key prefix."""
    started: list[GatewayProcess] = []
    prefix = f"rgtest-{uuid.uuid4().hex[:8]}"

    def make(n: int, *, args: tuple[str, ...] = (), **overrides: Any) -> list[GatewayProcess]:
        config = catalog(upstream.base_url, database_url=shared_pg, redis_url=shared_redis,
                         redis_key_prefix=prefix, **overrides)
        group = []
        for _ in range(n):
            directory = tmp_path / f"replica{len(started)}"
            directory.mkdir()
            gateway = GatewayProcess(directory, config, args=args).start()
            started.append(gateway)
            group.append(gateway)
        return group

    yield make
    for gateway in started:
        gateway.stop()
