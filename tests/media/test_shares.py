"""Each key's share of the image fetches: at most ``per_key_fetches`` at once, and at most
``per_key_fetch_seconds`` of fetching per minute (429 past it), so that one key's slow URLs
cannot starve every other key's images."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
import pytest
from aiohttp import web

from relaygate.errors import InvalidRequest, RateLimited
from relaygate.media.shares import FetchShares
from relaygate.settings import ImageSettings
from tests.media.conftest import MakePipeline
from tests.media.samples import chat, image_part, one_image, png, user
from tests.media.servers import Holder, ImageServer, RawServer, read_head
from tests.support.fake_openai import FakeOpenAI
from tests.support.gateway import GatewayProcess


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` (a deadline, not a sleep on a guess)."""
    async with asyncio.timeout(10):
        while not check():
            await asyncio.sleep(0.01)


# --- time: a budget of fetch seconds per minute ----------------------------------------------


async def test_a_key_that_spent_its_fetch_time_gets_429_until_it_recovers(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    clock = Clock()

    async def slow(request: web.Request) -> web.StreamResponse:
        clock.now += 10  # this fetch takes 10 seconds
        return web.Response(body=png(4, 4), content_type="image/png")

    images.routes["/slow.png"] = slow
    pipeline = make_pipeline(
        clock=clock,
        allow_internal=[f"127.0.0.1:{images.port}"],
        cache_bytes=0,
        per_key_fetch_seconds=6,  # refilled at 0.1 second per second
    )
    request, raw = one_image(images.url("/slow.png"))
    await pipeline.prepare(request, raw, vision=True, inline=True, key="A")
    with pytest.raises(RateLimited) as refused:
        await pipeline.prepare(request, raw, vision=True, inline=True, key="A")
    assert refused.value.retry_after == 40  # 4 seconds over, refilled at 0.1 per second
    assert (b"retry-after", b"40") in refused.value.headers()
    assert len(images.seen) == 1  # refused before any connection
    # another key is not affected, and neither are requests without a fetch
    await pipeline.prepare(request, raw, vision=True, inline=True, key="B")
    text_only, text_raw = chat(user({"type": "text", "text": "hi"}))
    await pipeline.prepare(text_only, text_raw, vision=True, inline=True, key="A")
    clock.now += 29  # 39 seconds after the fetch of "A" ended ("B" took 10)
    with pytest.raises(RateLimited):
        await pipeline.prepare(request, raw, vision=True, inline=True, key="A")
    clock.now += 2
    await pipeline.prepare(request, raw, vision=True, inline=True, key="A")


async def test_a_timed_out_fetch_is_charged(make_pipeline: MakePipeline) -> None:
    clock = Clock()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        clock.now += 5
        await server.stall()

    server = await RawServer(stall).start()
    try:
        pipeline = make_pipeline(
            clock=clock,
            allow_internal=[f"127.0.0.1:{server.port}"],
            fetch_timeout=0.2,
            per_key_fetch_seconds=4,
        )
        request, raw = one_image(server.url("/a.png"))
        with pytest.raises(InvalidRequest):
            await pipeline.prepare(request, raw, vision=True, inline=True, key="A")
        assert pipeline.shares.spent("A") >= 5
        with pytest.raises(RateLimited):
            await pipeline.prepare(request, raw, vision=True, inline=True, key="A")
    finally:
        await server.close()


def test_idle_shares_are_dropped() -> None:
    clock = Clock()
    shares = FetchShares(2, 60, clock)

    async def use(key: str) -> None:
        async with shares.slot(key):
            clock.now += 3

    asyncio.run(use("A"))
    assert len(shares) == 1
    clock.now += 61  # refilled, and a minute since the last sweep
    asyncio.run(use("B"))
    assert len(shares) == 1  # "A" went; "B" is still recovering


# --- concurrency: a share of the pool --------------------------------------------------------


async def test_a_key_runs_at_most_its_share_of_fetches_and_others_pass(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await slow.stall()

    slow = await RawServer(stall).start()
    try:
        pipeline = make_pipeline(
            allow_internal=[f"127.0.0.1:{slow.port}", f"127.0.0.1:{images.port}"],
            per_key_fetches=2,
            fetch_connections=4,
            fetch_timeout=60,
        )
        urls = [slow.url(f"/{i}.png") for i in range(5)]
        greedy, greedy_raw = chat(user(*(image_part(url) for url in urls)))
        task = asyncio.create_task(
            pipeline.prepare(greedy, greedy_raw, vision=True, inline=True, key="greedy")
        )
        await until(lambda: slow.connections == 2, "two slow fetches")
        fine = images.serve("/fine.png", png(3, 3))
        for key in ("B", "C", "D"):
            request, raw = one_image(fine)
            prepared = await pipeline.prepare(request, raw, vision=True, inline=True, key=key)
            assert prepared.images[0].image.info.width == 3
        assert slow.connections == 2  # the other three waited for the key's own slots
        slow.released.set()
        with pytest.raises(InvalidRequest):
            await task
    finally:
        await slow.close()


@pytest.mark.parametrize(("share", "pool"), [(16, 16), (20, 16)])
def test_a_share_must_be_below_the_pool(share: int, pool: int) -> None:
    with pytest.raises(msgspec.ValidationError, match="per_key_fetches"):
        msgspec.convert({"per_key_fetches": share, "fetch_connections": pool}, ImageSettings)


# --- through relaygate: one key's slow URLs do not starve the others --------------------------


class _Images(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = png(16, 16)
        self.send_response(200)
        self.send_header("content-type", "image/png")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _ask(urls: list[str]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "what is it?"}]
    parts += [image_part(url) for url in urls]
    return {"model": "gpt-5.2", "messages": [{"role": "user", "content": parts}]}


def test_one_keys_slow_urls_do_not_starve_other_keys(
    make_gateway: Callable[..., GatewayProcess], upstream: FakeOpenAI
) -> None:
    """Before: 16 requests of 16 slow URLs from one key held all 256 fetch connections, and
    the image requests of every other key failed once ``connect_timeout`` ran out."""
    slow = Holder()
    fast = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    threading.Thread(target=fast.serve_forever, daemon=True).start()
    attacks: list[threading.Thread] = []
    try:
        fast_url = f"http://127.0.0.1:{fast.server_address[1]}/ok.png"
        images = {
            "allow_internal": [f"127.0.0.1:{slow.port}", f"127.0.0.1:{fast.server_address[1]}"],
            "connect_timeout": 2,
            "fetch_timeout": 60,
        }
        gateway = make_gateway(images=images)
        with ThreadPoolExecutor(4) as pool:  # each key is a CLI run: in parallel
            created = list(pool.map(gateway.create_key, ["--credits"] * 4, ["1000"] + ["5"] * 3))
        greedy, *others = (key["key"] for key in created)
        results: list[int] = []
        for r in range(16):
            body = _ask([slow.url(f"/{r}/{i}.png") for i in range(16)])
            attack = threading.Thread(
                target=lambda b=body: results.append(
                    gateway.post("/v1/chat/completions", b, greedy)[0]
                )
            )
            attack.start()
            attacks.append(attack)
        gateway.wait_until(lambda: slow.accepted >= 16, message="16 slow fetches")
        answers = [gateway.post("/v1/chat/completions", _ask([fast_url]), key) for key in others]
        assert [status for status, _, _ in answers] == [200] * 3, answers
        assert slow.accepted == 16  # the key's share; before, all 256 connections
    finally:
        slow.close()
        for attack in attacks:
            attack.join(30)
        fast.shutdown()
        fast.server_close()
    # the slow server went away (400), or the key had used its fetch time by then (429)
    assert len(results) == 16
    assert set(results) <= {400, 429}
