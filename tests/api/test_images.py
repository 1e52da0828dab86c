"""Images on the request path: checked before any upstream call, forwarded inline."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.media.samples import data_url, png
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateway import GatewayProcess

CHAT = "/v1/chat/completions"
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"


def ask(url: str, detail: str | None = None) -> dict[str, Any]:
    image: dict[str, Any] = {"url": url}
    if detail:
        image["detail"] = detail
    return {"model": "gpt-5.2", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is it?"}, {"type": "image_url", "image_url": image}]}]}


class Canary:
    """A loopback listener that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def canary() -> Iterator[Canary]:
    listener = Canary()
    yield listener
    listener.close()


def test_a_data_url_image_is_checked_and_forwarded_inline(
    gateway: GatewayProcess, upstream: FakeOpenAI
) -> None:
    key = gateway.create_key("--credits", "5")
    status, _, answer = gateway.post(CHAT, ask(data_url(png(64, 32)), "low"), key["key"])
    assert status == 200, answer
    sent = upstream.received[-1].body["messages"][0]["content"][1]["image_url"]
    assert sent["url"].startswith("data:image/png;base64,")
    assert base64.b64decode(sent["url"].split(",", 1)[1]) == png(64, 32)
    assert sent["detail"] == "low"


def test_a_gif_is_refused_naming_the_part(gateway: GatewayProcess, upstream: FakeOpenAI) -> None:
    key = gateway.create_key("--credits", "5")
    status, _, answer = gateway.post(CHAT, ask(data_url(GIF, "image/gif")), key["key"])
    assert status == 400, answer
    assert answer["error"]["param"] == "messages[0].content[1]"
    assert upstream.received == []


def test_an_image_over_the_limit_is_a_413_that_charges_nothing(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    gateway = make_gateway(images={"max_bytes": 2048})
    key = gateway.create_key("--credits", "5")
    status, _, answer = gateway.post(CHAT, ask(data_url(png(8, 8, pad=4096))), key["key"])
    assert status == 413, answer
    assert answer["error"]["type"] == "request_too_large_error"
    assert answer["error"]["param"] == "content"
    assert "compress image" in answer["error"]["fallback_suggestion"]
    assert upstream.received == []
    assert gateway.credits(key["key"])["used_credits"] == 0


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("127.0.0.1", id="loopback"),
        pytest.param("[::ffff:127.0.0.1]", id="ipv4-mapped"),
        pytest.param("2130706433", id="integer"),
        pytest.param("localhost", id="name"),
    ],
)
def test_image_urls_never_reach_internal_addresses(
    gateway: GatewayProcess, upstream: FakeOpenAI, canary: Canary, host: str
) -> None:
    key = gateway.create_key("--credits", "5")
    status, _, answer = gateway.post(
        CHAT, ask(f"http://{host}:{canary.port}/cat.png"), key["key"]
    )
    assert status == 400, answer
    assert answer["error"]["param"] == "messages[0].content[1]"
    assert canary.accepted == 0
    assert upstream.received == []


def test_an_operator_can_allow_an_internal_image_host(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI, image_server: int
) -> None:
    gateway = make_gateway(images={"allow_internal": [f"127.0.0.1:{image_server}"]})
    key = gateway.create_key("--credits", "5")
    status, _, answer = gateway.post(
        CHAT, ask(f"http://127.0.0.1:{image_server}/a.png"), key["key"]
    )
    assert status == 200, answer
    sent = upstream.received[-1].body["messages"][0]["content"][1]["image_url"]["url"]
    assert base64.b64decode(sent.split(",", 1)[1]) == png(16, 16)


@pytest.fixture
def image_server() -> Iterator[int]:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Images(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = png(16, 16)
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_forward_mode_passes_checked_urls_to_upstreams_that_fetch(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI, image_server: int
) -> None:
    gateway = make_gateway(images={"allow_internal": [f"127.0.0.1:{image_server}"],
                                   "forward_urls": True})
    key = gateway.create_key("--credits", "5")
    url = f"http://127.0.0.1:{image_server}/a.png"
    status, _, answer = gateway.post(CHAT, ask(url), key["key"])
    assert status == 200, answer
    assert upstream.received[-1].body["messages"][0]["content"][1]["image_url"]["url"] == url


async def test_providers_that_cannot_fetch_get_the_checked_image_inline(image_server: int) -> None:
    from relaygate.media.pipeline import ImagePipeline
    from relaygate.protocol.validate import decode_chat_request
    from relaygate.providers.anthropic import AnthropicProvider
    from relaygate.providers.base import ProviderRequest
    from relaygate.providers.gemini import GeminiProvider
    from relaygate.providers.openai import OpenAIProvider
    from relaygate.settings import ImageSettings

    url = f"http://127.0.0.1:{image_server}/a.png"
    body = json.dumps(ask(url)).encode()
    request, raw = decode_chat_request(body)
    pipeline = ImagePipeline(ImageSettings(allow_internal=[f"127.0.0.1:{image_server}"]))
    try:
        prepared = await pipeline.prepare(request, raw, vision=True, inline=False)
    finally:
        await pipeline.close()
    call = ProviderRequest(request=request, raw=prepared.raw, upstream_model="m", stream=False,
                           request_id="r", images=prepared)
    assert OpenAIProvider.fetches_image_urls
    assert AnthropicProvider.fetches_image_urls
    assert not GeminiProvider.fetches_image_urls
    # a provider that fetches gets the same request; one that cannot gets the bytes inline,
    # in the raw body and in the typed request the non-OpenAI translators read
    assert call.for_provider(OpenAIProvider.__new__(OpenAIProvider)) is call
    inlined = call.for_provider(GeminiProvider.__new__(GeminiProvider))
    sent = inlined.raw["messages"][0]["content"][1]["image_url"]["url"]
    assert base64.b64decode(sent.split(",", 1)[1]) == png(16, 16)
    typed = inlined.request.messages[0].content[1]  # type: ignore[index,union-attr]
    assert typed.image_url.url == sent  # type: ignore[union-attr]
    assert call.raw["messages"][0]["content"][1]["image_url"]["url"] == url  # unchanged
