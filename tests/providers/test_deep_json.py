"""JSON nested too deeply for the decoder, from a fake upstream on loopback, in each provider's
non-streamed body, stream events and error body: an upstream error (502, the next upstream
tried, a failure for health), never a bare ``RecursionError`` (a 500 that skipped failover).

msgspec raises ``RecursionError`` past about 1,000 levels, even inside a field it skips."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from aiohttp import web

from relaygate.accounting.prices import Price
from relaygate.errors import UpstreamError, UpstreamStatus
from relaygate.providers.anthropic import AnthropicProvider
from relaygate.providers.base import Event, Provider
from relaygate.providers.gemini import GeminiOptions, GeminiProvider, build_body
from relaygate.providers.http import HttpJsonProvider, upstream_message
from relaygate.providers.openai import OpenAIProvider
from relaygate.providers.simulator import SimulatorProvider
from relaygate.routing.catalog import CatalogModel
from relaygate.routing.router import open_upstream
from relaygate.settings import ModelSettings, Pricing, UpstreamSettings
from relaygate.upstream_http import UpstreamClient
from tests.providers.server import ThreadedServer
from tests.providers.support import call, drain
from tests.support.gateway import GatewayProcess

LEVELS = 50_000
DEEP = b"[" * LEVELS + b"]" * LEVELS
"""100 KB of nesting: far past the decoder's limit."""
UNKNOWN = b'{"x": ' + DEEP + b"}"
"""Deep JSON in a field no decoder knows (skipped, and still too deep)."""


@dataclass
class Answer:
    status: int = 200
    body: bytes = UNKNOWN
    stream: bool = False


class DeepUpstream(ThreadedServer[Answer]):
    """Answers every POST with the scripted status and bytes."""

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/{tail:.*}", self._answer)

    async def _answer(self, request: web.Request) -> web.Response:
        await self.record(request)
        reply = self.next_reply()
        kind = "text/event-stream" if reply.stream else "application/json"
        return web.Response(status=reply.status, body=reply.body, content_type=kind)


@pytest.fixture(scope="module")
def deep() -> Iterator[DeepUpstream]:
    server = DeepUpstream(Answer())
    server.start()
    yield server
    server.stop()


PROVIDERS: dict[str, tuple[type[HttpJsonProvider], str, bytes]] = {
    # provider, path under the fake's root, and a readable first stream event
    "openai": (OpenAIProvider, "/v1", b'{"choices": [{"index": 0, "delta": {"content": "hi"}}]}'),
    "anthropic": (
        AnthropicProvider,
        "",
        b'{"type": "content_block_start", "index": 0,'
        b' "content_block": {"type": "text", "text": "hi"}}',
    ),
    "gemini": (
        GeminiProvider,
        "/v1beta",
        b'{"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}}]}',
    ),
}
KINDS = ["body", "error-body", "first-stream-event", "later-stream-event"]


def answer(name: str, kind: str) -> Answer:
    first = PROVIDERS[name][2]
    if kind == "body":
        return Answer(body=UNKNOWN)
    if kind == "error-body":
        return Answer(status=500, body=b'{"error": {"message": "m", "x": ' + DEEP + b"}}")
    events = [UNKNOWN] if kind == "first-stream-event" else [first, UNKNOWN]
    return Answer(body=b"".join(b"data: " + e + b"\n\n" for e in events), stream=True)


def deep_provider(name: str, server: DeepUpstream, session: UpstreamClient) -> Provider:
    cls, path, _ = PROVIDERS[name]
    settings = UpstreamSettings(
        provider=name, name=f"deep-{name}", api_key="k", base_url=server.root + path, retries=0
    )
    return cls(settings, session)


def simulator() -> SimulatorProvider:
    options = {"first_token_ms": 0, "inter_token_ms": 0}
    return SimulatorProvider(
        UpstreamSettings(provider="simulator", name="sim", options=options, priority=1)
    )


def test_an_unreadably_deep_error_body_has_no_message() -> None:
    assert upstream_message(b'{"x":' + b"[" * 100000 + b"]" * 100000 + b"}") == ""


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(PROVIDERS))
async def test_deep_json_is_an_upstream_error(deep: DeepUpstream, name: str, kind: str) -> None:
    deep.reset(answer(name, kind))
    stream = kind.endswith("stream-event")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    seen: list[Event] = []
    async with UpstreamClient() as session:
        provider = deep_provider(name, deep, session)
        with pytest.raises(UpstreamError) as raised:
            await drain(provider.events(call(body)), seen)
    if kind == "error-body":
        assert isinstance(raised.value, UpstreamStatus)
        assert raised.value.message == f"Upstream deep-{name} answered HTTP 500"
    else:
        assert "could not be read" in raised.value.message


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(PROVIDERS))
async def test_deep_json_fails_over_and_counts_as_a_failure(
    deep: DeepUpstream, name: str, kind: str
) -> None:
    """Before an answer has started, the next upstream answers; once a stream has started, it
    ends with an upstream error. Either way the deep upstream's health records a failure."""
    deep.reset(answer(name, kind))
    stream = kind.endswith("stream-event")
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    pricing = Pricing(input=Decimal(1), output=Decimal(1))
    async with UpstreamClient() as session:
        model = CatalogModel(
            "m",
            ModelSettings(pricing=pricing),
            Price.from_settings(pricing),
            [deep_provider(name, deep, session), simulator()],
        )
        opened = await open_upstream(model, call(body))
        seen: list[Event] = []
        if opened.provider.label == "sim":
            await drain(opened.events, seen)
        else:
            assert stream  # the stream had started: it is the client's, and ends in error
            with pytest.raises(UpstreamError):
                await drain(opened.events, seen)
    snapshot = model.health[0].snapshot()
    assert (snapshot["window_requests"], snapshot["window_failure_rate"]) == (1, 1.0)


# --- through relaygate -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, deep: DeepUpstream
) -> Iterator[GatewayProcess]:
    broken = {"provider": "openai", "name": "deep", "base_url": deep.root + "/v1", "retries": 0}
    sim = {"provider": "simulator", "options": {"first_token_ms": 0, "inter_token_ms": 0}}
    pricing = {"input": "1", "output": "1"}
    models = {
        "deep": {"pricing": pricing, "upstreams": [broken]},
        "deep-then-sim": {"pricing": pricing, "upstreams": [broken, {**sim, "priority": 1}]},
    }
    directory: Path = tmp_path_factory.mktemp("deep-gateway")
    config = {"models": models, "ledger_flush_seconds": 0.05}
    gateway = GatewayProcess(directory, config).start()
    yield gateway
    gateway.stop()


@pytest.mark.parametrize("kind", ["body", "error-body"])
def test_relaygate_answers_deep_json_with_502_or_the_next_upstream(
    gateway: GatewayProcess, deep: DeepUpstream, kind: str
) -> None:
    key = gateway.create_key("--credits", "5")["key"]
    body = {"model": "deep", "messages": [{"role": "user", "content": "hi"}]}
    deep.reset(answer("openai", kind))
    status, _, reply = gateway.post("/v1/chat/completions", body, key)
    assert status == 502, reply
    assert reply["error"]["type"] == "upstream_error"
    assert "[[[" not in json.dumps(reply)
    status, headers, reply = gateway.post(
        "/v1/chat/completions", {**body, "model": "deep-then-sim"}, key
    )
    assert status == 200, reply
    assert headers["x-relaygate-upstream"] == "simulator"
    assert len(deep.received) == 2
    assert "Traceback" not in gateway.logs()


@pytest.mark.parametrize(
    ("content", "result"),
    [
        pytest.param("[" * 5000 + "]" * 5000, "[" * 5000 + "]" * 5000, id="too-deep"),
        pytest.param("[" * 100 + "]" * 100, "[" * 100 + "]" * 100, id="deeper-than-64"),
        pytest.param('{"temp": 21}', None, id="json-object"),
        pytest.param("[[1]]", [[1]], id="json-array"),
        pytest.param("sunny", "sunny", id="text"),
    ],
)
def test_a_tool_result_for_gemini_is_json_only_when_shallow(content: str, result: object) -> None:
    """A tool message's content is client text: Gemini gets it as JSON when it is JSON nested
    at most 64 levels, else as the text it is. Before: a ``RecursionError`` (500) past about
    1,000 levels."""
    tool_call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": "c1", "content": content},
    ]
    body = build_body(call({"model": "m", "messages": messages}), GeminiOptions())
    response = body["contents"][-1]["parts"][0]["functionResponse"]["response"]
    assert response == ({"temp": 21} if result is None else {"result": result})
