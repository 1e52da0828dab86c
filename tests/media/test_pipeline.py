"""The pipeline without the network: data: URLs, the vision flag, the image cap, formats,
token estimates and the rewritten body."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from relaygate.errors import InvalidRequest, RequestTooLarge
from relaygate.media import request_image_token_bound
from tests.media.conftest import MakePipeline
from tests.media.samples import (
    GIF,
    HTML,
    SVG,
    chat,
    data_url,
    image_part,
    jpeg,
    one_image,
    png,
    text_part,
    user,
    webp_lossy,
)
from tests.media.servers import Trace

MB = 1024 * 1024


async def test_a_request_without_images_is_passed_through_untouched(
    make_pipeline: MakePipeline,
) -> None:
    request, raw = chat(user(text_part("hello")))
    prepared = await make_pipeline().prepare(request, raw, vision=False, inline=True)
    assert prepared.raw is raw
    assert prepared.images == ()
    assert prepared.tokens == 0


async def test_data_urls_mixed_with_text_in_several_messages(make_pipeline: MakePipeline) -> None:
    a, b, c = png(1024, 1024), jpeg(2048, 4096), webp_lossy(300, 200)
    request, raw = chat(
        user(text_part("first"), image_part(data_url(a), "high")),
        {"role": "assistant", "content": "ok"},
        user(image_part(data_url(b, "image/jpeg")), text_part("and"),
             image_part(data_url(c, "image/webp"), "low")),
    )
    prepared = await make_pipeline().prepare(request, raw, vision=True, inline=True)
    summary = [(i.where, i.image.info.mime, i.image.data, i.detail, i.tokens)
               for i in prepared.images]
    assert summary == [
        ("messages[0].content[1]", "image/png", a, "high", 765),
        ("messages[2].content[0]", "image/jpeg", b, None, 1105),
        ("messages[2].content[2]", "image/webp", c, "low", 85),
    ]
    assert prepared.tokens == 765 + 1105 + 85
    assert prepared.raw == raw  # already inline with the right media types: nothing to change


async def test_the_declared_media_type_is_ignored_and_corrected(
    make_pipeline: MakePipeline,
) -> None:
    data = png(10, 10)
    request, raw = one_image(data_url(data, "image/gif"), "low")
    original = copy.deepcopy(raw)
    prepared = await make_pipeline().prepare(request, raw, vision=True, inline=False)
    part = prepared.raw["messages"][0]["content"][1]
    assert part == {"type": "image_url",
                    "image_url": {"url": data_url(data, "image/png"), "detail": "low"}}
    assert raw == original


async def test_base64_with_line_breaks_and_no_padding_is_read(make_pipeline: MakePipeline) -> None:
    data = png(5, 5, pad=100)
    encoded = base64.b64encode(data).decode().rstrip("=")
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    request, raw = one_image("data:image/png;base64," + wrapped)
    prepared = await make_pipeline().prepare(request, raw, vision=True, inline=True)
    assert prepared.images[0].image.data == data
    assert prepared.raw["messages"][0]["content"][1]["image_url"]["url"] == data_url(data)


async def test_percent_encoded_data_urls_are_read(make_pipeline: MakePipeline) -> None:
    data = png(2, 3)
    encoded = "".join(f"%{byte:02X}" for byte in data)
    request, raw = one_image("data:image/png," + encoded)
    prepared = await make_pipeline().prepare(request, raw, vision=True, inline=True)
    assert prepared.images[0].image.data == data


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        pytest.param(data_url(GIF, "image/png"), "is a GIF image", id="gif-declared-png"),
        pytest.param(data_url(SVG, "image/svg+xml"), "is an SVG image", id="svg"),
        pytest.param(data_url(HTML, "image/png"), "is an HTML page", id="html"),
        pytest.param(data_url(b""), "is empty", id="empty"),
        pytest.param("data:image/png;base64,@@@@", "not valid base64", id="not-base64"),
        pytest.param("data:image/png;base64,iVBORw0KG", "not valid base64", id="bad-length"),
        pytest.param("data:image/png;base64", "no ','", id="no-comma"),
        pytest.param("ftp://example.com/a.png", "http(s) URL or a data: URL", id="ftp"),
        pytest.param("file:///etc/passwd", "http(s) URL or a data: URL", id="file"),
        pytest.param("gopher://127.0.0.1:6379/_INFO", "http(s) URL or a data: URL", id="gopher"),
        pytest.param("/relative.png", "http(s) URL or a data: URL", id="relative"),
        pytest.param("http:///a.png", "has no host", id="no-host"),
        pytest.param("http://user:pw@example.com/a.png", "carries credentials", id="userinfo"),
        pytest.param("http://token@example.com/a.png", "carries credentials", id="user-only"),
        pytest.param("http://[::1/a.png", "not a valid URL", id="broken-ipv6"),
    ],
)
async def test_unusable_images_get_400_naming_the_part(
    make_pipeline: MakePipeline, url: str, problem: str
) -> None:
    trace = Trace()
    request, raw = one_image(url)
    with pytest.raises(InvalidRequest) as caught:
        await make_pipeline(trace=trace).prepare(request, raw, vision=True, inline=True)
    assert caught.value.param == "messages[0].content[1]"
    assert problem in caught.value.message
    assert "messages[0].content[1]" in caught.value.message
    assert trace.requests == []


async def test_a_text_only_model_gets_400_at_the_first_image(make_pipeline: MakePipeline) -> None:
    request, raw = chat(user(text_part("a"), text_part("b"), image_part(data_url(png()))))
    with pytest.raises(InvalidRequest) as caught:
        await make_pipeline().prepare(request, raw, vision=False, inline=True)
    assert caught.value.param == "messages[0].content[2]"
    assert "does not accept images" in caught.value.message


async def test_more_images_than_the_cap_get_400_at_the_first_one_too_many(
    make_pipeline: MakePipeline,
) -> None:
    url = data_url(png())
    request, raw = chat(user(*[image_part(url)] * 2), user(text_part("x"), image_part(url)))
    pipeline = make_pipeline(max_images=2)
    with pytest.raises(InvalidRequest) as caught:
        await pipeline.prepare(request, raw, vision=True, inline=True)
    assert caught.value.param == "messages[1].content[1]"
    assert "at most 2" in caught.value.message
    request, raw = chat(user(*[image_part(url)] * 2))
    prepared = await pipeline.prepare(request, raw, vision=True, inline=True)
    assert len(prepared.images) == 2


def assert_too_large(error: RequestTooLarge, limit_text: str) -> None:
    assert error.status == 413
    assert error.type == "request_too_large_error"
    assert error.param == "content"
    assert error.fallback_suggestion == f"compress image to under {limit_text}"
    assert error.message.startswith("Image file too large")


async def test_a_data_url_above_10mb_gets_the_contracts_413(make_pipeline: MakePipeline) -> None:
    big = png(100, 100, pad=10 * MB)
    request, raw = one_image(data_url(big))
    with pytest.raises(RequestTooLarge) as caught:
        await make_pipeline().prepare(request, raw, vision=True, inline=True)
    assert_too_large(caught.value, "10MB")
    assert "messages[0].content[1]" in caught.value.message


async def test_the_size_limit_is_exact(make_pipeline: MakePipeline) -> None:
    data = png(1, 1, pad=1000)
    pipeline = make_pipeline(max_bytes=len(data))
    request, raw = one_image(data_url(data))
    prepared = await pipeline.prepare(request, raw, vision=True, inline=True)
    assert prepared.images[0].image.size == len(data)
    request, raw = one_image(data_url(data + b"\x00"))
    with pytest.raises(RequestTooLarge) as caught:
        await pipeline.prepare(request, raw, vision=True, inline=True)
    assert_too_large(caught.value, f"{len(data)} bytes")


async def test_percent_encoded_data_urls_are_size_checked(make_pipeline: MakePipeline) -> None:
    request, raw = one_image("data:image/png," + "%00" * 2000)
    with pytest.raises(RequestTooLarge):
        await make_pipeline(max_bytes=1000).prepare(request, raw, vision=True, inline=True)


async def test_all_images_of_a_request_together_are_bounded(make_pipeline: MakePipeline) -> None:
    data = png(1, 1, pad=1000)
    request, raw = chat(user(*[image_part(data_url(data))] * 3))
    pipeline = make_pipeline(max_total_bytes=len(data) * 3 - 1)
    with pytest.raises(RequestTooLarge) as caught:
        await pipeline.prepare(request, raw, vision=True, inline=True)
    assert caught.value.param == "content"
    assert "add up to more than" in caught.value.message


async def test_the_first_bad_part_in_request_order_is_named(make_pipeline: MakePipeline) -> None:
    request, raw = chat(user(image_part(data_url(png())), image_part(data_url(GIF)),
                             image_part("ftp://x/y.png")))
    with pytest.raises(InvalidRequest) as caught:
        await make_pipeline().prepare(request, raw, vision=True, inline=True)
    assert caught.value.param == "messages[0].content[1]"


async def test_token_bound_known_before_fetching() -> None:
    request, _ = chat(user(image_part("https://example.com/a.png", "low"),
                           image_part("https://example.com/b.png"),
                           image_part("https://example.com/c.png", "high")))
    assert request_image_token_bound(request) == 85 + 1445 + 1445


def part_urls(raw: dict[str, Any]) -> list[str]:
    return [part["image_url"]["url"] for message in raw["messages"]
            if isinstance(message["content"], list)
            for part in message["content"] if part["type"] == "image_url"]


async def test_rewrite_keeps_every_other_field(make_pipeline: MakePipeline) -> None:
    data = png(4, 4)
    request, raw = chat(user(text_part("t"), image_part(data_url(data, "image/x-png"), "high")))
    raw["temperature"] = 0.5
    raw["messages"][0]["name"] = "alice"
    raw["messages"][0]["content"][1]["image_url"]["extra"] = "kept"
    original = copy.deepcopy(raw)
    prepared = await make_pipeline().prepare(request, raw, vision=True, inline=True)
    expected = copy.deepcopy(original)
    expected["messages"][0]["content"][1]["image_url"]["url"] = data_url(data)
    assert prepared.raw == expected
    assert raw == original
