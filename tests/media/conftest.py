"""Fixtures of the image tests: pipelines closed after each test, canaries, image servers."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from relaygate.media import ImagePipeline, Lookup
from relaygate.settings import ImageSettings
from tests.media.servers import Canary, FakeDNS, ImageServer, Trace

MakePipeline = Callable[..., ImagePipeline]
_LOOPBACK = {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}


def _numeric(host: object) -> bool:
    if host is None:
        return True
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        try:
            socket.inet_aton(text)
        except OSError:
            return False
    return True


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A safety net under the tests (not a check of the code): a socket may connect only to
    127.0.0.1 or ::1, and the real resolver is asked only about numeric hosts, whatever the
    code under test does. Anything else is refused and fails the test."""
    violations: list[str] = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and ipaddress.ip_address(address[0]) not in _LOOPBACK:
            violations.append(f"connect {address}")
            raise PermissionError(f"test guard: no connections to {address[0]}")
        connect(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _numeric(host):
            violations.append(f"getaddrinfo {host!r}")
            raise socket.gaierror(socket.EAI_NONAME, "test guard: no name lookups")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield violations
    assert violations == []


@pytest.fixture
async def make_pipeline() -> AsyncIterator[MakePipeline]:
    """``make(lookup=..., trace=..., clock=..., **image_settings)``; the lookup defaults to an
    empty :class:`FakeDNS`, so no test ever asks a real resolver about a name."""
    made: list[ImagePipeline] = []

    def make(
        lookup: Lookup | None = None,
        trace: Trace | None = None,
        clock: Callable[[], float] = time.monotonic,
        **settings: Any,
    ) -> ImagePipeline:
        pipeline = ImagePipeline(
            ImageSettings(**settings),
            lookup=lookup if lookup is not None else FakeDNS(),
            clock=clock,
            trace_configs=[trace.config()] if trace is not None else (),
        )
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        await pipeline.close()


@pytest.fixture
async def canary() -> AsyncIterator[Canary]:
    listener = await Canary("127.0.0.1").start()
    yield listener
    await listener.close()


@pytest.fixture
async def canary6() -> AsyncIterator[Canary]:
    listener = await Canary("::1").start()
    yield listener
    await listener.close()


@pytest.fixture
async def images() -> AsyncIterator[ImageServer]:
    server = await ImageServer("127.0.0.1").start()
    yield server
    await server.close()
