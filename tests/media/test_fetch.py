"""Fetching http(s) image URLs from real servers on loopback (allow-listed by port): sizes
counted while streaming, formats by magic bytes, time limits, redirects, headers, the cache."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from relaygate.errors import InvalidRequest, RequestTooLarge
from relaygate.media.cache import blob_cost, url_cost
from tests.media.conftest import MakePipeline
from tests.media.samples import GIF, HTML, SVG, chat, image_part, jpeg, one_image, png, user
from tests.media.servers import FakeDNS, Handler, ImageServer, RawServer, read_head


def allowed(server: ImageServer | RawServer) -> list[str]:
    return [f"127.0.0.1:{server.port}"]


# --- the happy path and the forwarded body ---------------------------------------------------


async def test_a_fetched_image_is_inlined_or_passed_through(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    data = png(1024, 1024)
    url = images.serve("/a.png", data)
    pipeline = make_pipeline(allow_internal=allowed(images))
    request, raw = one_image(url, "high")
    inline = await pipeline.prepare(request, raw, vision=True, inline=True)
    assert inline.images[0].image.data == data
    assert inline.tokens == 765
    part = inline.raw["messages"][0]["content"][1]
    assert part["image_url"] == {"url": inline.images[0].image.data_url(), "detail": "high"}
    passthrough = inline.rewrite(raw, inline=False)
    assert passthrough == raw
    assert raw["messages"][0]["content"][1]["image_url"]["url"] == url


async def test_several_urls_are_fetched_and_the_same_url_once(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    a = images.serve("/a.png", png(10, 10))
    b = images.serve("/b.jpg", jpeg(20, 30), "image/jpeg")
    request, raw = chat(user(image_part(a), image_part(b)), user(image_part(a, "low")))
    pipeline = make_pipeline(allow_internal=allowed(images), cache_bytes=0)
    prepared = await pipeline.prepare(request, raw, vision=True, inline=True)
    assert [i.image.info.mime for i in prepared.images] == ["image/png", "image/jpeg", "image/png"]
    assert sorted(seen.path for seen in images.seen) == ["/a.png", "/b.jpg"]


async def test_content_type_is_ignored_magic_bytes_decide(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    good = images.serve("/good", png(3, 3), "text/html")
    bad = images.serve("/bad.png", GIF, "image/png")
    pipeline = make_pipeline(allow_internal=allowed(images))
    request, raw = one_image(good)
    assert (await pipeline.prepare(request, raw, vision=True, inline=True)).images
    request, raw = one_image(bad)
    with pytest.raises(InvalidRequest) as caught:
        await pipeline.prepare(request, raw, vision=True, inline=True)
    assert caught.value.param == "messages[0].content[1]"
    assert "is a GIF image" in caught.value.message


@pytest.mark.parametrize(("body", "what"), [(SVG, "an SVG image"), (HTML, "an HTML page")])
async def test_svg_and_html_are_refused(
    make_pipeline: MakePipeline, images: ImageServer, body: bytes, what: str
) -> None:
    request, raw = one_image(images.serve("/x", body, "image/svg+xml"))
    with pytest.raises(InvalidRequest) as caught:
        await make_pipeline(allow_internal=allowed(images)).prepare(
            request, raw, vision=True, inline=True
        )
    assert what in caught.value.message


async def test_an_error_status_is_a_400_naming_the_part(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    request, raw = one_image(images.url("/missing.png"))
    with pytest.raises(InvalidRequest) as caught:
        await make_pipeline(allow_internal=allowed(images)).prepare(
            request, raw, vision=True, inline=True
        )
    assert caught.value.param == "messages[0].content[1]"
    assert "answered HTTP 404" in caught.value.message


async def test_what_the_fetcher_sends_and_does_not_send(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    images.serve("/a.png", png())
    url = f"http://images.test:{images.port}/a.png?sig=1"
    dns = FakeDNS({"images.test": [["127.0.0.1"]]})
    pipeline = make_pipeline(lookup=dns, allow_internal=allowed(images))
    request, raw = one_image(url)
    await pipeline.prepare(request, raw, vision=True, inline=True)
    headers = {k.lower(): v for k, v in images.seen[0].headers.items()}
    assert headers["host"] == f"images.test:{images.port}"
    assert headers["accept-encoding"] == "identity"
    assert not {"authorization", "cookie", "proxy-authorization"} & set(headers)
    assert dns.calls == ["images.test"]


# --- sizes: counted while the body streams in ------------------------------------------------


def raw_response(head: bytes, body: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(head + b"\r\n" + body)
        await writer.drain()

    return handler


@pytest.fixture
async def raw_server() -> AsyncIterator[list[RawServer]]:
    started: list[RawServer] = []
    yield started
    for server in started:
        await server.close()


async def serve_raw(started: list[RawServer], handler: Handler) -> RawServer:
    server = await RawServer(handler).start()
    started.append(server)
    return server


LIMIT = 4096


async def fetch_raw(make_pipeline: MakePipeline, server: RawServer, **settings: object) -> bytes:
    pipeline = make_pipeline(allow_internal=allowed(server), max_bytes=LIMIT, **settings)
    request, raw = one_image(server.url())
    prepared = await pipeline.prepare(request, raw, vision=True, inline=True)
    return prepared.images[0].image.data


async def test_a_chunked_body_without_length_is_cut_at_the_limit(
    make_pipeline: MakePipeline, raw_server: list[RawServer]
) -> None:
    body = png(1, 1, pad=LIMIT)
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 1000]), body[i : i + 1000])
        for i in range(0, len(body), 1000)
    ) + b"0\r\n\r\n"
    server = await serve_raw(
        raw_server, raw_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n", chunked)
    )
    with pytest.raises(RequestTooLarge) as caught:
        await fetch_raw(make_pipeline, server)
    assert caught.value.param == "content"
    assert caught.value.fallback_suggestion == "compress image to under 4096 bytes"


async def test_a_body_ended_by_closing_is_cut_at_the_limit(
    make_pipeline: MakePipeline, raw_server: list[RawServer]
) -> None:
    server = await serve_raw(
        raw_server,
        raw_response(b"HTTP/1.1 200 OK\r\nConnection: close\r\n", png(1, 1, pad=LIMIT)),
    )
    with pytest.raises(RequestTooLarge):
        await fetch_raw(make_pipeline, server)


async def test_a_declared_length_above_the_limit_is_refused_before_reading(
    make_pipeline: MakePipeline, raw_server: list[RawServer]
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n" + png())
        await writer.drain()
        await server.stall()  # never sends the rest: reading it would run into the time limit

    server = await serve_raw(raw_server, handler)
    with pytest.raises(RequestTooLarge):
        await fetch_raw(make_pipeline, server, fetch_timeout=30)


async def test_a_declared_length_below_the_body_only_lets_that_much_in(
    make_pipeline: MakePipeline, raw_server: list[RawServer]
) -> None:
    body = png(7, 7, pad=10 * LIMIT)
    server = await serve_raw(
        raw_server, raw_response(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n", body)
    )
    # aiohttp either stops at the declared length or refuses the bytes after it as a malformed
    # response (depending on whether they arrive in the same read); never more gets in.
    outcome: bytes | str
    try:
        outcome = await fetch_raw(make_pipeline, server)
    except InvalidRequest as exc:
        outcome = exc.message
    refused = (
        "The image URL at messages[0].content[1] could not be downloaded (ClientResponseError)"
    )
    assert outcome in (body[:100], refused)


async def test_a_body_of_exactly_the_limit_is_accepted(
    make_pipeline: MakePipeline, raw_server: list[RawServer]
) -> None:
    body = png(1, 1)
    body = png(1, 1, pad=LIMIT - len(body) - 12)
    assert len(body) == LIMIT
    server = await serve_raw(
        raw_server, raw_response(b"HTTP/1.1 200 OK\r\nConnection: close\r\n", body)
    )
    assert await fetch_raw(make_pipeline, server) == body


async def test_fetched_bytes_count_against_the_request_total(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    data = png(1, 1, pad=1000)
    a, b = images.serve("/a", data), images.serve("/b", data)
    request, raw = chat(user(image_part(a), image_part(b)))
    pipeline = make_pipeline(allow_internal=allowed(images), max_total_bytes=2 * len(data) - 1)
    with pytest.raises(RequestTooLarge) as caught:
        await pipeline.prepare(request, raw, vision=True, inline=True)
    assert "add up to more than" in caught.value.message


# --- time limits -----------------------------------------------------------------------------


async def test_a_server_that_never_answers_runs_into_the_time_limit(
    make_pipeline: MakePipeline, raw_server: list[RawServer]
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await server.stall()

    server = await serve_raw(raw_server, handler)
    with pytest.raises(InvalidRequest) as caught:
        await fetch_raw(make_pipeline, server, fetch_timeout=0.2)
    assert "could not be downloaded within 0.2 seconds" in caught.value.message
    assert caught.value.param == "messages[0].content[1]"


async def test_a_trickling_server_cannot_hold_the_fetch(
    make_pipeline: MakePipeline, raw_server: list[RawServer]
) -> None:
    sent: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        body = png(1, 1, pad=LIMIT - 100)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        for byte in body:  # each byte well within any per-read time-out
            writer.write(bytes([byte]))
            await writer.drain()
            sent.append(byte)
            await asyncio.sleep(0.01)

    server = await serve_raw(raw_server, handler)
    with pytest.raises(InvalidRequest) as caught:
        await fetch_raw(make_pipeline, server, fetch_timeout=0.3)
    assert "could not be downloaded within" in caught.value.message
    assert 0 < len(sent) < LIMIT - 100


async def test_a_name_lookup_that_never_answers_runs_into_the_time_limit(
    make_pipeline: MakePipeline,
) -> None:
    dns = FakeDNS(hang={"slow.test"})
    request, raw = one_image("http://slow.test/a.png")
    with pytest.raises(InvalidRequest) as caught:
        await make_pipeline(lookup=dns, fetch_timeout=0.2).prepare(
            request, raw, vision=True, inline=True
        )
    assert "could not be downloaded within" in caught.value.message
    assert dns.calls == ["slow.test"]


# --- redirects -------------------------------------------------------------------------------


async def test_redirects_are_followed_up_to_the_limit(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    data = png(9, 9)
    images.serve("/final.png", data)
    images.redirect("/r3", "/final.png", status=307)
    images.redirect("/r2", images.url("/r3"), status=301)
    images.redirect("/r1", "r2", status=303)
    images.redirect("/r0", "/r1", status=308)
    pipeline = make_pipeline(allow_internal=allowed(images), max_redirects=3, cache_bytes=0)
    request, raw = one_image(images.url("/r1"))
    prepared = await pipeline.prepare(request, raw, vision=True, inline=True)
    assert prepared.images[0].image.data == data
    request, raw = one_image(images.url("/r0"))
    with pytest.raises(InvalidRequest) as caught:
        await pipeline.prepare(request, raw, vision=True, inline=True)
    assert "redirected more than 3 times" in caught.value.message


async def test_no_redirects_when_the_limit_is_zero(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    images.serve("/final.png", png())
    request, raw = one_image(images.redirect("/r", "/final.png"))
    with pytest.raises(InvalidRequest):
        await make_pipeline(allow_internal=allowed(images), max_redirects=0).prepare(
            request, raw, vision=True, inline=True
        )


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("file:///etc/passwd", "http(s) URL"),
        ("gopher://127.0.0.1:70/", "http(s) URL"),
        ("http://user:secret@example.com/a.png", "carries credentials"),
        ("", "without a Location"),
    ],
)
async def test_redirect_targets_are_checked_like_the_first_url(
    make_pipeline: MakePipeline, images: ImageServer, location: str, problem: str
) -> None:
    request, raw = one_image(images.redirect("/r", location))
    with pytest.raises(InvalidRequest) as caught:
        await make_pipeline(allow_internal=allowed(images)).prepare(
            request, raw, vision=True, inline=True
        )
    assert problem in caught.value.message
    assert [seen.path for seen in images.seen] == ["/r"]


async def test_cookies_set_by_a_redirect_are_not_sent_on(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    images.serve("/final.png", png())
    images.redirect("/r", "/final.png", **{"Set-Cookie": "session=abc; Path=/"})
    dns = FakeDNS({"images.test": [["127.0.0.1"]]})  # a name: cookie jars ignore bare IPs
    request, raw = one_image(f"http://images.test:{images.port}/r")
    await make_pipeline(lookup=dns, allow_internal=allowed(images)).prepare(
        request, raw, vision=True, inline=True
    )
    assert [seen.path for seen in images.seen] == ["/r", "/final.png"]
    assert "cookie" not in {k.lower() for k in images.seen[1].headers}


async def test_proxy_settings_in_the_environment_are_ignored(
    make_pipeline: MakePipeline, images: ImageServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def proxy_route(request: web.Request) -> web.StreamResponse:
        return web.Response(status=500)

    proxy = await ImageServer().start()
    try:
        proxy.routes["/"] = proxy_route
        for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.url("/"))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        request, raw = one_image(images.serve("/a.png", png()))
        await make_pipeline(allow_internal=allowed(images)).prepare(
            request, raw, vision=True, inline=True
        )
        assert proxy.seen == []
        assert len(images.seen) == 1
    finally:
        await proxy.close()


# --- the cache -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_fetched_images_are_cached_by_url_until_they_expire(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    clock = Clock()
    url = images.serve("/a.png", png(2, 2))
    pipeline = make_pipeline(allow_internal=allowed(images), clock=clock, cache_seconds=60)
    request, raw = one_image(url)
    for _ in range(3):
        await pipeline.prepare(request, raw, vision=True, inline=True)
    assert len(images.seen) == 1
    clock.now = 60
    await pipeline.prepare(request, raw, vision=True, inline=True)
    assert len(images.seen) == 2


async def test_two_urls_with_the_same_content_are_cached_once(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    data = png(2, 2, pad=500)
    a, b = images.serve("/a.png", data), images.serve("/b.png", data)
    pipeline = make_pipeline(allow_internal=allowed(images))
    request, raw = chat(user(image_part(a), image_part(b)))
    await pipeline.prepare(request, raw, vision=True, inline=True)
    assert len(pipeline.cache) == 2
    stored = pipeline.cache.by_digest(hashlib.sha256(data).hexdigest())
    assert stored is not None
    assert pipeline.cache.bytes == blob_cost(stored) + url_cost(a) + url_cost(b)


async def test_without_a_cache_every_request_fetches(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    url = images.serve("/a.png", png(2, 2))
    pipeline = make_pipeline(allow_internal=allowed(images), cache_bytes=0)
    request, raw = one_image(url)
    await pipeline.prepare(request, raw, vision=True, inline=True)
    await pipeline.prepare(request, raw, vision=True, inline=True)
    assert len(images.seen) == 2


async def test_refused_images_are_not_cached(
    make_pipeline: MakePipeline, images: ImageServer
) -> None:
    url = images.serve("/a.gif", GIF)
    pipeline = make_pipeline(allow_internal=allowed(images))
    request, raw = one_image(url)
    for _ in range(2):
        with pytest.raises(InvalidRequest):
            await pipeline.prepare(request, raw, vision=True, inline=True)
    assert len(images.seen) == 2
    assert len(pipeline.cache) == 0
