"""Upstream cookies are not kept: one key's answer cannot put a cookie on another key's call."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import catalog
from tests.support.fake_openai import Behavior, FakeOpenAI
from tests.support.gateway import GatewayProcess

BODY = {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}


def test_a_cookie_set_by_an_upstream_is_not_sent_back(
    tmp_path: Path, upstream: FakeOpenAI
) -> None:
    # A host name, not an IP: cookie jars keep cookies for names only.
    url = upstream.base_url.replace("127.0.0.1", "localhost")
    gateway = GatewayProcess(tmp_path, catalog(url)).start()
    try:
        first = gateway.create_key("--credits", "10")["key"]
        second = gateway.create_key("--credits", "10")["key"]
        upstream.script = [Behavior(set_cookie="session=tenant-a; Path=/"), Behavior()]
        for key in (first, second):
            status, _, answer = gateway.post("/v1/chat/completions", BODY, key)
            assert status == 200, answer
    finally:
        gateway.stop()
    assert len(upstream.received) == 2
    assert "session=tenant-a" not in upstream.received[1].headers.get("Cookie", "")
